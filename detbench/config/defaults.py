"""Default values of every config key.

Key names and meanings follow maskrcnn-benchmark, so its YAML files load here.
Rule (enforced by tests/config/test_defaults.py): every leaf key has a comment,
on its line or directly above it, giving meaning, unit and valid values.
Keys ending in _TRAIN / _TEST apply to training / testing only.
Use :func:`get_cfg` for a fresh, mutable copy; never mutate ``_C`` itself.
"""

from yacs.config import CfgNode as CN

_C = CN()

# ---------------------------------------------------------------------------
# MODEL: which detector to build and where its weights come from
# ---------------------------------------------------------------------------
_C.MODEL = CN()
# Device the model runs on: "cpu", "cuda" or "cuda:N".
_C.MODEL.DEVICE = "cuda"
# Detector class, a name registered in detbench.modeling.detector ("GeneralizedRCNN").
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
# Weights to start from: a file path, or "" for random initialisation.
_C.MODEL.WEIGHT = ""
# Stop after the RPN and return its proposals as the detections (bool).
_C.MODEL.RPN_ONLY = False
# Add the mask head (bool).
_C.MODEL.MASK_ON = False
# Add the keypoint head (bool).
_C.MODEL.KEYPOINT_ON = False
# Predict one box per RoI for all classes instead of one per class (bool).
_C.MODEL.CLS_AGNOSTIC_BBOX_REG = False

# ---------------------------------------------------------------------------
# INPUT: resizing and normalisation of images
# ---------------------------------------------------------------------------
_C.INPUT = CN()
# Shorter side in training, pixels; a tuple means one value drawn per image.
_C.INPUT.MIN_SIZE_TRAIN = (800,)
# Upper bound of the longer side in training, pixels (>= MIN_SIZE_TRAIN).
_C.INPUT.MAX_SIZE_TRAIN = 1333
# Shorter side at test time, pixels.
_C.INPUT.MIN_SIZE_TEST = 800
# Upper bound of the longer side at test time, pixels (>= MIN_SIZE_TEST).
_C.INPUT.MAX_SIZE_TEST = 1333
# Per-channel mean subtracted from the image, in the channel order and value range set by TO_BGR255.
_C.INPUT.PIXEL_MEAN = [102.9801, 115.9465, 122.7717]
# Per-channel divisor applied after the mean (positive numbers, same order as PIXEL_MEAN).
_C.INPUT.PIXEL_STD = [1.0, 1.0, 1.0]
# True: BGR channel order with values in [0, 255] (Caffe2-trained weights); False: RGB in [0, 1].
_C.INPUT.TO_BGR255 = True
# Probability of a horizontal flip of each training image, in [0, 1].
_C.INPUT.HORIZONTAL_FLIP_PROB_TRAIN = 0.5

# ---------------------------------------------------------------------------
# DATASETS: names looked up in the dataset catalog
# ---------------------------------------------------------------------------
_C.DATASETS = CN()
# Names of the training datasets (tuple of str); several are concatenated.
_C.DATASETS.TRAIN = ()
# Names of the test datasets (tuple of str); each is evaluated on its own.
_C.DATASETS.TEST = ()

# ---------------------------------------------------------------------------
# DATALOADER
# ---------------------------------------------------------------------------
_C.DATALOADER = CN()
# Worker processes that load data (int >= 0; 0 loads in the main process).
_C.DATALOADER.NUM_WORKERS = 4
# Pad each batch so its height and width are multiples of this (0: no rounding; 32 for FPN).
_C.DATALOADER.SIZE_DIVISIBILITY = 0
# Batch portrait images with portrait ones and landscape with landscape (bool).
_C.DATALOADER.ASPECT_RATIO_GROUPING = True

# ---------------------------------------------------------------------------
# SOLVER: optimiser and learning-rate schedule (iteration based)
# ---------------------------------------------------------------------------
_C.SOLVER = CN()
# Number of training iterations (int > 0).
_C.SOLVER.MAX_ITER = 40000
# Learning rate after warm-up, before any decay (float > 0).
_C.SOLVER.BASE_LR = 0.001
# Multiplier of BASE_LR for bias parameters (float > 0).
_C.SOLVER.BIAS_LR_FACTOR = 2
# SGD momentum, in [0, 1).
_C.SOLVER.MOMENTUM = 0.9
# L2 weight decay of non-bias parameters (float >= 0).
_C.SOLVER.WEIGHT_DECAY = 0.0005
# L2 weight decay of bias parameters (float >= 0).
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0
# Factor applied to the learning rate at each step in STEPS, in (0, 1].
_C.SOLVER.GAMMA = 0.1
# Iterations at which the learning rate is multiplied by GAMMA (increasing ints).
_C.SOLVER.STEPS = (30000,)
# Learning rate at iteration 0 as a fraction of BASE_LR, in (0, 1].
_C.SOLVER.WARMUP_FACTOR = 1.0 / 3
# Length of the warm-up, iterations (int >= 0).
_C.SOLVER.WARMUP_ITERS = 500
# Warm-up shape: "constant" or "linear".
_C.SOLVER.WARMUP_METHOD = "linear"
# Save a checkpoint every this many iterations (int > 0).
_C.SOLVER.CHECKPOINT_PERIOD = 2500
# Images per training batch summed over all processes (int, a multiple of the world size).
_C.SOLVER.IMS_PER_BATCH = 16

# ---------------------------------------------------------------------------
# TEST
# ---------------------------------------------------------------------------
_C.TEST = CN()
# Images per test batch summed over all processes (int, a multiple of the world size).
_C.TEST.IMS_PER_BATCH = 8
# Expected results as [dataset, task, metric, value] lists, checked after testing (regression runs).
_C.TEST.EXPECTED_RESULTS = []
# Allowed deviation from EXPECTED_RESULTS, in standard deviations (float > 0).
_C.TEST.EXPECTED_RESULTS_SIGMA_TOL = 4

# ---------------------------------------------------------------------------
# Misc
# ---------------------------------------------------------------------------
# Folder for checkpoints, logs, metrics and inference results (created if missing).
_C.OUTPUT_DIR = "."


def get_cfg() -> CN:
    """A fresh, mutable copy of the default config."""
    return _C.clone()
