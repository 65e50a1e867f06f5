// Library-wide pieces of detbench._C: the build information op, and the module
// entry point that lets Python's import machinery accept the shared library.
#include <Python.h>
#include <torch/library.h>

#ifdef WITH_CUDA
#include <cuda.h>
#endif

namespace detbench {

// CUDA version the library was compiled with (e.g. 13000), or -1 for a CPU-only build.
int64_t cuda_version() {
#ifdef WITH_CUDA
  return CUDA_VERSION;
#else
  return -1;
#endif
}

TORCH_LIBRARY_FRAGMENT(detbench, m) {
  m.def("_cuda_version", &cuda_version);
}

}  // namespace detbench

// The operators are registered by static initialisers when the library is loaded
// (torch.ops.load_library); this empty module only satisfies `import detbench._C`.
static struct PyModuleDef detbench_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&detbench_module);
}
