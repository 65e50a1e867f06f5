"""The recipes shipped with detbench, found the same way from a clone and from an installed wheel.

A clone keeps them in ``configs/`` at the top of the repository; a wheel carries the same
files inside the package (``detbench/configs/``, copied there by setup.py). Either way::

    from detbench import model_zoo
    path = model_zoo.get_config_file("quickstart/mask_rcnn_R_18_FPN_shapes.yaml")
    cfg = load_config(path)                       # or load_config("detbench://configs/quickstart/...")

and a YAML file may start from one with ``_BASE_: "detbench://configs/pennfudan/...yaml"``.
"""

from __future__ import annotations

from pathlib import Path

SCHEME = "detbench://configs/"
_PACKAGE = Path(__file__).resolve().parent


def config_root() -> Path:
    """The folder holding the shipped recipes: inside the package when installed, else the clone's."""
    inside = _PACKAGE / "configs"
    if inside.is_dir():
        return inside
    return _PACKAGE.parent / "configs"


def list_configs() -> list[str]:
    """Names of every shipped recipe, relative to :func:`config_root` (``"pennfudan/....yaml"``)."""
    root = config_root()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))


def get_config_file(name: str) -> str:
    """Path of the shipped recipe ``name``: ``"e2e_mask_rcnn_R_50_FPN_1x.yaml"``,
    ``"configs/pennfudan/....yaml"`` or ``"detbench://configs/pennfudan/....yaml"``.

    Raises FileNotFoundError naming the recipe and the closest shipped names.
    """
    relative = name[len(SCHEME):] if name.startswith(SCHEME) else name
    if name.startswith("detbench://") and not name.startswith(SCHEME):
        raise FileNotFoundError(f"{name}: detbench:// names must start with {SCHEME}")
    relative = relative[len("configs/"):] if relative.startswith("configs/") else relative
    path = config_root() / relative
    if ".." in Path(relative).parts or not path.is_file():
        import difflib

        close = difflib.get_close_matches(relative, list_configs(), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; shipped: {', '.join(list_configs())}"
        raise FileNotFoundError(f"no shipped config {name!r} in {config_root()}{hint}")
    return str(path)
