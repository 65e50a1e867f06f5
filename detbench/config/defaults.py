"""Default values of every config key.

Key names and meanings follow maskrcnn-benchmark, so its YAML files load here.
Rule (enforced by tests/config/test_defaults.py): every leaf key has a comment,
on its line or directly above it, giving meaning, unit and valid values.
Keys ending in _TRAIN / _TEST apply to training / testing only.
Use :func:`get_cfg` for a fresh, mutable copy; never mutate ``_C`` itself.
"""

from yacs.config import CfgNode as CN

from .node import CfgNode

_C = CfgNode()

# ---------------------------------------------------------------------------
# MODEL: which detector to build and where its weights come from
# ---------------------------------------------------------------------------
_C.MODEL = CN()
# Device the model runs on: "auto" (CUDA when a GPU is visible, else CPU; settled when the config
# is loaded or frozen, and logged), "cpu", "cuda" or "cuda:N" (these fail when no GPU is visible).
_C.MODEL.DEVICE = "auto"
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
# Build RetinaNet (one-stage, MODEL.RETINANET.*) as the proposal stage; needs RPN_ONLY True (bool).
_C.MODEL.RETINANET_ON = False

# ---------------------------------------------------------------------------
# MODEL.BACKBONE: the convolutional body
# ---------------------------------------------------------------------------
_C.MODEL.BACKBONE = CN()
# Registered body name: R-50-C4, R-50-C5, R-101-C4, R-101-C5, R-50-FPN, R-101-FPN, R-152-FPN, ...
_C.MODEL.BACKBONE.CONV_BODY = "R-50-C4"
# Freeze the first N parts of the body: 0 nothing, 1 the stem, 2 stem + res2 (layer1), ... up to 5.
_C.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = 2

# ---------------------------------------------------------------------------
# MODEL.RESNETS: ResNet / ResNeXt options (backbone and the C4 box head)
# ---------------------------------------------------------------------------
_C.MODEL.RESNETS = CN()
# Groups of the 3x3 convolutions: 1 is ResNet, > 1 ResNeXt (e.g. 32).
_C.MODEL.RESNETS.NUM_GROUPS = 1
# Channels per group in the first stage's bottleneck (64 for ResNet; 8 for X-101-32x8d).
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
# Put a block's stride on its first 1x1 conv (True, original MSRA/Caffe2) or on the 3x3 (False, torchvision).
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True
# Residual block: "BottleneckWithFixedBatchNorm" / "BottleneckWithGN" (R-50 and deeper) or
# "BasicBlockWithFixedBatchNorm" / "BasicBlockWithGN" (R-18/34; need RES2_OUT_CHANNELS 64).
_C.MODEL.RESNETS.TRANS_FUNC = "BottleneckWithFixedBatchNorm"
# Registered stem (conv1 + pool1): "StemWithFixedBatchNorm" or "StemWithGN".
_C.MODEL.RESNETS.STEM_FUNC = "StemWithFixedBatchNorm"
# Dilation of the last stage ("res5"), 1 or 2; with 2 that stage keeps stride 16.
_C.MODEL.RESNETS.RES5_DILATION = 1
# Channels of every FPN level (256 in the FPN configs); C4/C5 bodies take their width from the stage specs.
_C.MODEL.RESNETS.BACKBONE_OUT_CHANNELS = 256 * 4
# Output channels of the first stage ("res2"); doubled at each later stage.
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
# Output channels of the stem.
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
# eps added to the variance in FrozenBatchNorm2d: 0 for Caffe2 weights, 1e-5 for torchvision's.
_C.MODEL.RESNETS.FROZEN_BN_EPSILON = 0.0

# ---------------------------------------------------------------------------
# MODEL.FPN
# ---------------------------------------------------------------------------
_C.MODEL.FPN = CN()
# GroupNorm after the FPN's lateral and output convolutions (bool).
_C.MODEL.FPN.USE_GN = False
# ReLU after the FPN's lateral and output convolutions (bool).
_C.MODEL.FPN.USE_RELU = False

# ---------------------------------------------------------------------------
# MODEL.GROUP_NORM: sizes of every GroupNorm layer (exactly one of the two is -1)
# ---------------------------------------------------------------------------
_C.MODEL.GROUP_NORM = CN()
# Channels per group, or -1 to use NUM_GROUPS.
_C.MODEL.GROUP_NORM.DIM_PER_GP = -1
# Number of groups, or -1 to use DIM_PER_GP.
_C.MODEL.GROUP_NORM.NUM_GROUPS = 32
# eps added to the variance in GroupNorm (float > 0).
_C.MODEL.GROUP_NORM.EPSILON = 1e-5

# ---------------------------------------------------------------------------
# MODEL.RPN: region proposal network
# ---------------------------------------------------------------------------
_C.MODEL.RPN = CN()
# Attach the RPN to every FPN level (True) or to the single backbone output (False).
_C.MODEL.RPN.USE_FPN = False
# Anchor sizes in input-image pixels (sqrt of the area); with FPN one size per level.
_C.MODEL.RPN.ANCHOR_SIZES = (32, 64, 128, 256, 512)
# Stride of each feature map the RPN sees, pixels; with FPN one per level, same length as ANCHOR_SIZES.
_C.MODEL.RPN.ANCHOR_STRIDE = (16,)
# Derive each level's anchor stride per axis as (padded batch size // feature map size), as
# torchvision does, instead of ANCHOR_STRIDE (they differ where the padded size is not a
# multiple of the stride: P6 of an 800 x 1216 batch gets 61 x 64). True in configs/torchvision.
_C.MODEL.RPN.STRIDES_FROM_IMAGE = False
# Anchor aspect ratios, height / width.
_C.MODEL.RPN.ASPECT_RATIOS = (0.5, 1.0, 2.0)
# Anchors reaching more than this many pixels outside the image are ignored in training (-1 keeps all).
_C.MODEL.RPN.STRADDLE_THRESH = 0
# Anchor-to-ground-truth IoU at or above which an anchor is positive, in [0, 1].
_C.MODEL.RPN.FG_IOU_THRESHOLD = 0.7
# IoU below which an anchor is negative, in [0, FG_IOU_THRESHOLD].
_C.MODEL.RPN.BG_IOU_THRESHOLD = 0.3
# Anchors sampled per image for the RPN loss (int > 0).
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
# Target fraction of positives among the sampled anchors, in (0, 1].
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
# Best-scoring anchors kept before NMS in training, per image and per FPN level.
_C.MODEL.RPN.PRE_NMS_TOP_N_TRAIN = 12000
# Best-scoring anchors kept before NMS at test time, per image and per FPN level.
_C.MODEL.RPN.PRE_NMS_TOP_N_TEST = 6000
# Proposals kept after NMS in training, per image and per FPN level (-1: all).
_C.MODEL.RPN.POST_NMS_TOP_N_TRAIN = 2000
# Proposals kept after NMS at test time, per image and per FPN level (-1: all).
_C.MODEL.RPN.POST_NMS_TOP_N_TEST = 1000
# IoU threshold of the proposal NMS, in (0, 1].
_C.MODEL.RPN.NMS_THRESH = 0.7
# Proposals narrower or lower than this (input-image pixels) are dropped (float >= 0).
_C.MODEL.RPN.MIN_SIZE = 0.0
# FPN: proposals kept after merging the levels in training (see FPN_POST_NMS_PER_BATCH).
_C.MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN = 2000
# FPN: proposals kept per image after merging the levels at test time.
_C.MODEL.RPN.FPN_POST_NMS_TOP_N_TEST = 2000
# FPN, training: apply FPN_POST_NMS_TOP_N_TRAIN to the whole batch (True, maskrcnn-benchmark) or per image (False).
_C.MODEL.RPN.FPN_POST_NMS_PER_BATCH = True
# Registered RPN head: "SingleConvRPNHead".
_C.MODEL.RPN.RPN_HEAD = "SingleConvRPNHead"
# Weights (wx, wy, ww, wh) of the anchor-to-proposal box coder.
_C.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
# beta of the smooth L1 loss on RPN box deltas (0: L1; torchvision uses 1/9).
_C.MODEL.RPN.SMOOTH_L1_BETA = 1.0 / 9

# ---------------------------------------------------------------------------
# MODEL.ROI_HEADS: sampling and post-processing shared by the RoI heads
# ---------------------------------------------------------------------------
_C.MODEL.ROI_HEADS = CN()
# Use the FPN variants of the RoI heads (multi-level pooling) (bool).
_C.MODEL.ROI_HEADS.USE_FPN = False
# Proposal-to-ground-truth IoU at or above which a proposal is foreground, in [0, 1].
_C.MODEL.ROI_HEADS.FG_IOU_THRESHOLD = 0.5
# IoU below which a proposal is background, in [0, FG_IOU_THRESHOLD].
_C.MODEL.ROI_HEADS.BG_IOU_THRESHOLD = 0.5
# Weights (wx, wy, ww, wh) of the proposal-to-detection box coder.
_C.MODEL.ROI_HEADS.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# Proposals sampled per image for the box-head loss (int > 0).
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
# Target fraction of foreground among the sampled proposals, in (0, 1].
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
# Add the ground-truth boxes to the proposals in training (bool).
_C.MODEL.ROI_HEADS.ADD_GT_PROPOSALS = True
# Test: detections scoring below this are dropped, in [0, 1].
_C.MODEL.ROI_HEADS.SCORE_THRESH = 0.05
# Test: IoU threshold of the per-class NMS, in (0, 1].
_C.MODEL.ROI_HEADS.NMS = 0.5
# Test: maximum detections per image (int > 0; 100 for COCO).
_C.MODEL.ROI_HEADS.DETECTIONS_PER_IMG = 100
# Test: detections narrower or lower than this (pixels) are dropped (0 keeps all; torchvision: 0.01).
_C.MODEL.ROI_HEADS.MIN_DETECTION_SIZE = 0.0

# ---------------------------------------------------------------------------
# MODEL.ROI_BOX_HEAD
# ---------------------------------------------------------------------------
_C.MODEL.ROI_BOX_HEAD = CN()
# Registered feature extractor: ResNet50Conv5ROIFeatureExtractor, FPN2MLPFeatureExtractor, FPNXconv1fcFeatureExtractor.
_C.MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR = "ResNet50Conv5ROIFeatureExtractor"
# Registered predictor: FastRCNNPredictor (C4) or FPNPredictor.
_C.MODEL.ROI_BOX_HEAD.PREDICTOR = "FastRCNNPredictor"
# Side of the pooled RoI feature, in feature cells.
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
# Bilinear samples per pooled cell and axis (0: adaptive, ceil(roi size / resolution)).
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0
# Scale of each pooled feature map relative to the input image (1 / stride), one per level.
_C.MODEL.ROI_BOX_HEAD.POOLER_SCALES = (1.0 / 16,)
# RoIAlign pixel model: False as in maskrcnn-benchmark and torchvision's detectors, True shifts by half a pixel.
_C.MODEL.ROI_BOX_HEAD.POOLER_ALIGNED = False
# Number of classes including the background (81 for COCO; 91 for torchvision's label ids).
_C.MODEL.ROI_BOX_HEAD.NUM_CLASSES = 81
# Width of the hidden fully connected layers of MLP feature extractors.
_C.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM = 1024
# GroupNorm in the box head's convolutions (FPNXconv1fcFeatureExtractor) (bool).
_C.MODEL.ROI_BOX_HEAD.USE_GN = False
# Dilation of the box head's convolutions.
_C.MODEL.ROI_BOX_HEAD.DILATION = 1
# Channels of the box head's convolutions (FPNXconv1fcFeatureExtractor).
_C.MODEL.ROI_BOX_HEAD.CONV_HEAD_DIM = 256
# Number of convolutions in FPNXconv1fcFeatureExtractor.
_C.MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS = 4
# Box regression loss of the box head (detectron2's keys): "smooth_l1" on the encoded deltas
# (SMOOTH_L1_BETA; 0 gives plain L1) or "giou" (generalized IoU, torchvision.ops, between the
# decoded box and its ground truth; scale-free, so it weighs small and large objects alike).
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "smooth_l1"
# Factor on the box regression loss (float >= 0); the sum over foreground RoIs is divided by all
# sampled RoIs either way.
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 1.0
# Beta of the smooth L1 box loss (float >= 0; 1/9 as torchvision and maskrcnn-benchmark).
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 1.0 / 9

# ---------------------------------------------------------------------------
# MODEL.ROI_MASK_HEAD
# ---------------------------------------------------------------------------
_C.MODEL.ROI_MASK_HEAD = CN()
# Registered feature extractor: ResNet50Conv5ROIFeatureExtractor (C4) or MaskRCNNFPNFeatureExtractor.
_C.MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR = "ResNet50Conv5ROIFeatureExtractor"
# Registered predictor: MaskRCNNC4Predictor (also used with FPN).
_C.MODEL.ROI_MASK_HEAD.PREDICTOR = "MaskRCNNC4Predictor"
# Side of the pooled RoI feature, in feature cells.
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
# Bilinear samples per pooled cell and axis (0: adaptive).
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
# Scale of each pooled feature map relative to the input image, one per level.
_C.MODEL.ROI_MASK_HEAD.POOLER_SCALES = (1.0 / 16,)
# RoIAlign pixel model of the mask pooler (see ROI_BOX_HEAD.POOLER_ALIGNED).
_C.MODEL.ROI_MASK_HEAD.POOLER_ALIGNED = False
# Unused by detbench's mask heads; kept so maskrcnn-benchmark YAML files load.
_C.MODEL.ROI_MASK_HEAD.MLP_HEAD_DIM = 1024
# Channels of each convolution of the FPN mask feature extractor.
_C.MODEL.ROI_MASK_HEAD.CONV_LAYERS = (256, 256, 256, 256)
# Side of the predicted mask, cells (twice the pooled side after the deconvolution).
_C.MODEL.ROI_MASK_HEAD.RESOLUTION = 14
# Training, C4: reuse the box head's features for the mask head (bool).
_C.MODEL.ROI_MASK_HEAD.SHARE_BOX_FEATURE_EXTRACTOR = True
# Paste the masks into the image inside the model (bool); otherwise the evaluation does it.
_C.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS = False
# Threshold on mask probabilities when POSTPROCESS_MASKS is True (< 0 keeps probabilities).
_C.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD = 0.5
# The masks' pixel model, in training and when pasting (bool). False: torchvision's numbers
# (targets cut by RoIAlign without the half-pixel correction, masks pasted over boxes
# truncated to integers), which move a mask by up to a pixel or so; True: detectron2's (aligned
# targets, masks pasted over their exact float boxes). A perfect 28x28 mask of a shapes_val
# object returns to its ground truth with mean IoU 0.885 with False, 0.997 with True: set
# True for small objects. Models trained with one setting should be tested with the same.
_C.MODEL.ROI_MASK_HEAD.ALIGNED_MASKS = False
# Dilation of the mask head's convolutions.
_C.MODEL.ROI_MASK_HEAD.DILATION = 1
# GroupNorm in the mask head's convolutions (bool).
_C.MODEL.ROI_MASK_HEAD.USE_GN = False

# ---------------------------------------------------------------------------
# MODEL.ROI_KEYPOINT_HEAD
# ---------------------------------------------------------------------------
_C.MODEL.ROI_KEYPOINT_HEAD = CN()
# Registered feature extractor: "KeypointRCNNFeatureExtractor".
_C.MODEL.ROI_KEYPOINT_HEAD.FEATURE_EXTRACTOR = "KeypointRCNNFeatureExtractor"
# Registered predictor: "KeypointRCNNPredictor".
_C.MODEL.ROI_KEYPOINT_HEAD.PREDICTOR = "KeypointRCNNPredictor"
# Side of the pooled RoI feature, in feature cells.
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION = 14
# Bilinear samples per pooled cell and axis (0: adaptive).
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO = 0
# Scale of each pooled feature map relative to the input image, one per level.
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_SCALES = (1.0 / 16,)
# RoIAlign pixel model of the keypoint pooler (see ROI_BOX_HEAD.POOLER_ALIGNED).
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_ALIGNED = False
# Unused by detbench's keypoint head; kept so maskrcnn-benchmark YAML files load.
_C.MODEL.ROI_KEYPOINT_HEAD.MLP_HEAD_DIM = 1024
# Channels of each convolution of the keypoint feature extractor.
_C.MODEL.ROI_KEYPOINT_HEAD.CONV_LAYERS = tuple(512 for _ in range(8))
# Side of the heatmaps the keypoint loss uses, cells (56 = 4x a 14-cell pooler, as the predictor upsamples 4x).
_C.MODEL.ROI_KEYPOINT_HEAD.RESOLUTION = 14
# Number of keypoints (17 for COCO persons).
_C.MODEL.ROI_KEYPOINT_HEAD.NUM_CLASSES = 17
# Training, C4: reuse the box head's features for the keypoint head (bool).
_C.MODEL.ROI_KEYPOINT_HEAD.SHARE_BOX_FEATURE_EXTRACTOR = True

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

# -- INPUT: training augmentations (detbench/data/transforms/augment.py) --
# Large-scale jitter in training, in place of the MIN/MAX_SIZE_TRAIN resize: scale the image by
# s * min(TARGET_SIZE / width, TARGET_SIZE / height), s uniform in [MIN_SCALE, MAX_SCALE], then
# cut a random TARGET_SIZE window where a side is longer; instances outside it are dropped.
_C.INPUT.SCALE_JITTER = CN()
# Use it (bool).
_C.INPUT.SCALE_JITTER.ENABLED = False
# Side of the square the image is fitted to and cropped to, pixels (int > 0).
_C.INPUT.SCALE_JITTER.TARGET_SIZE = 1024
# Smallest scale factor s (float > 0).
_C.INPUT.SCALE_JITTER.MIN_SCALE = 0.1
# Largest scale factor s (float >= MIN_SCALE).
_C.INPUT.SCALE_JITTER.MAX_SCALE = 2.0
# Colour jitter of training images (torchvision.transforms.v2.ColorJitter); all 0: off.
_C.INPUT.COLOR_JITTER = CN()
# Brightness factor drawn in [1 - BRIGHTNESS, 1 + BRIGHTNESS] (float >= 0).
_C.INPUT.COLOR_JITTER.BRIGHTNESS = 0.0
# Contrast factor drawn in [1 - CONTRAST, 1 + CONTRAST] (float >= 0).
_C.INPUT.COLOR_JITTER.CONTRAST = 0.0
# Saturation factor drawn in [1 - SATURATION, 1 + SATURATION] (float >= 0).
_C.INPUT.COLOR_JITTER.SATURATION = 0.0
# Hue shift drawn in [-HUE, HUE] (float in [0, 0.5]).
_C.INPUT.COLOR_JITTER.HUE = 0.0

# -- INPUT: the resize of torchvision's detection models (detbench/data/transforms/torchvision_resize.py) --
# How MIN_SIZE_* / MAX_SIZE_* resize images: "pil" (maskrcnn-benchmark's sizes, shorter side exactly
# MIN_SIZE, PIL bilinear on the 8-bit image) or "torchvision" (GeneralizedRCNNTransform's: one scale
# min(MIN_SIZE / short, MAX_SIZE / long), sides floored, bilinear F.interpolate of the float image),
# which torchvision-trained weights need to give torchvision's detections. Not with SCALE_JITTER.
_C.INPUT.RESIZE_MODE = "pil"

# ---------------------------------------------------------------------------
# DATASETS: names looked up in the dataset catalog
# ---------------------------------------------------------------------------
_C.DATASETS = CN()
# Names of the training datasets (tuple of str); several are concatenated.
_C.DATASETS.TRAIN = ()
# Names of the test datasets (tuple of str); each is evaluated on its own.
_C.DATASETS.TEST = ()
# Your own COCO-format data: (name, image folder, annotation json) triples added to the catalog.
_C.DATASETS.CUSTOM = ()
# Training: drop images without usable annotations (bool); test sets always keep every image.
_C.DATASETS.REMOVE_IMAGES_WITHOUT_ANNOTATIONS = True
# Penn-Fudan: the last N images (sorted by file name) form "penn_fudan_test", the rest "penn_fudan_train".
_C.DATASETS.PENN_FUDAN_NUM_TEST = 50

# ---------------------------------------------------------------------------
# DATASETS: checks of the image files before training or testing starts
# ---------------------------------------------------------------------------
# How every image file of a COCO-format dataset is checked when the dataset is built:
# "exists" (present and not empty, one stat per image), "header" (also opened: a readable
# image of the size the json says) or "decode" (fully decoded once: also finds truncated files).
_C.DATASETS.VERIFY_IMAGES = "exists"

# ---------------------------------------------------------------------------
# DATALOADER
# ---------------------------------------------------------------------------
_C.DATALOADER = CN()
# Worker processes that load data (int >= 0; 0 loads in the main process).
_C.DATALOADER.NUM_WORKERS = 4
# Pad each batch so its height and width are multiples of this (0: no rounding; 32 for FPN).
_C.DATALOADER.SIZE_DIVISIBILITY = 0
# Batch portrait images with portrait ones and landscape with landscape (bool). Groups are
# formed over the global batch (all processes), so N processes see the batches 1 process would.
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
# Evaluate on DATASETS.TEST every this many iterations (0: only at the end).
_C.SOLVER.TEST_PERIOD = 0
# Images per training batch summed over all processes (int, a multiple of the world size).
_C.SOLVER.IMS_PER_BATCH = 16
# Log the training metrics every this many iterations (int > 0).
_C.SOLVER.LOG_PERIOD = 20

# -- SOLVER: modern recipe options (optimizer, schedule, norm decay, gradient clipping) --
# "SGD" (with MOMENTUM) or "AdamW" (with BETAS; weight decay decoupled, as torch.optim.AdamW).
_C.SOLVER.OPTIMIZER = "SGD"
# AdamW's (beta1, beta2), each in [0, 1).
_C.SOLVER.BETAS = (0.9, 0.999)
# Weight decay of normalisation layers' scales and shifts (BatchNorm, GroupNorm, LayerNorm);
# negative: they are treated as other weights and biases (WEIGHT_DECAY, WEIGHT_DECAY_BIAS).
_C.SOLVER.WEIGHT_DECAY_NORM = -1.0
# "WarmupMultiStepLR" (STEPS, GAMMA) or "WarmupCosineLR" (a cosine from BASE_LR at iteration 0
# to BASE_LR_END at MAX_ITER); both start with the WARMUP_* warm-up.
_C.SOLVER.LR_SCHEDULER = "WarmupMultiStepLR"
# Final learning rate of WarmupCosineLR (float >= 0, below BASE_LR).
_C.SOLVER.BASE_LR_END = 0.0
# Gradient clipping before each optimizer step (detectron2's keys), on unscaled gradients.
_C.SOLVER.CLIP_GRADIENTS = CN()
# Clip at all (bool).
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
# "value": clamp every gradient entry to +-CLIP_VALUE; "norm": rescale all gradients together
# so that their NORM_TYPE-norm is at most CLIP_VALUE.
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
# The clipping threshold (float > 0).
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
# The p of the p-norm for CLIP_TYPE "norm" (float > 0, or inf for the largest entry).
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0

# ---------------------------------------------------------------------------
# MODEL_EMA: an exponential moving average of the weights (detbench/solver/ema.py)
# ---------------------------------------------------------------------------
_C.MODEL_EMA = CN()
# Keep the average: periodic evaluations use it, checkpoints save it as "ema" (exact resume), and
# at the end it becomes the model (model_final.pth holds the averaged weights).
_C.MODEL_EMA.ENABLED = False
# The decay d in ema <- d * ema + (1 - d) * weight, in [0, 1); about 1 / (1 - d) steps are averaged.
_C.MODEL_EMA.DECAY = 0.9998
# Ramp of the decay: update t uses DECAY * (1 - exp(-t / RAMP_ITERS)) (int >= 0; 0: no ramp).
_C.MODEL_EMA.RAMP_ITERS = 2000

# ---------------------------------------------------------------------------
# SOLVER: checkpoints kept on disk
# ---------------------------------------------------------------------------
# Periodic checkpoints (model_NNNNNNN.pth) kept, the newest ones; older ones are deleted after
# each save. model_final.pth is always kept. Int >= 0; 0 keeps every checkpoint.
_C.SOLVER.CHECKPOINTS_TO_KEEP = 3

# ---------------------------------------------------------------------------
# TEST
# ---------------------------------------------------------------------------
_C.TEST = CN()
# Images per test batch summed over all processes (int, a multiple of the world size).
_C.TEST.IMS_PER_BATCH = 8
# Regression checks after the final evaluation (tools/train_net.py, tools/test_net.py):
# [task, metric, [mean, std]] entries (maskrcnn-benchmark's form, every DATASETS.TEST dataset)
# or [dataset, task, metric, [mean, std]], e.g. [["bbox", "AP", [0.36, 0.002]]]. A result
# outside mean +- SIGMA_TOL x std makes the tool exit non-zero (engine/expected_results.py).
_C.TEST.EXPECTED_RESULTS = []
# Allowed deviation from EXPECTED_RESULTS, in standard deviations (float >= 0).
_C.TEST.EXPECTED_RESULTS_SIGMA_TOL = 4

# ---------------------------------------------------------------------------
# Misc
# ---------------------------------------------------------------------------
# Folder for checkpoints, logs, metrics and inference results (created if missing); "{config}" is
# replaced by the config file's name without .yaml ("defaults" without a file); "" writes nothing.
_C.OUTPUT_DIR = "output/{config}"
# Random seed of torch, numpy and Python's random, offset by the rank (-1: drawn at random and logged).
_C.SEED = -1
# Training precision: "float32", or "float16" for mixed precision with torch.amp (CUDA only).
_C.DTYPE = "float32"
# Unused (apex's verbosity in maskrcnn-benchmark); kept so its YAML files load.
_C.AMP_VERBOSE = False

# ===========================================================================
# RoIPool pooling per head, RetinaNet (keys and defaults of maskrcnn-benchmark)
# ===========================================================================
# RoI pooling of the box head: "ROIAlign" (bilinear, Mask R-CNN) or "ROIPool" (max, Fast R-CNN).
_C.MODEL.ROI_BOX_HEAD.POOLER_METHOD = "ROIAlign"
# RoI pooling of the mask head: "ROIAlign" or "ROIPool" (see ROI_BOX_HEAD.POOLER_METHOD).
_C.MODEL.ROI_MASK_HEAD.POOLER_METHOD = "ROIAlign"
# RoI pooling of the keypoint head: "ROIAlign" or "ROIPool" (see ROI_BOX_HEAD.POOLER_METHOD).
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_METHOD = "ROIAlign"
# Channels of every FPN level, an older name of RESNETS.BACKBONE_OUT_CHANNELS that some
# maskrcnn-benchmark files use (int > 0 overrides it; -1: use RESNETS.BACKBONE_OUT_CHANNELS).
_C.MODEL.BACKBONE.OUT_CHANNELS = -1

_C.MODEL.RETINANET = CN()
# Number of classes including the background (81 for COCO); the head predicts NUM_CLASSES - 1 logits per anchor.
_C.MODEL.RETINANET.NUM_CLASSES = 81
# Base anchor size per FPN level P3..P7, input pixels (sqrt of the area); one per ANCHOR_STRIDES entry.
_C.MODEL.RETINANET.ANCHOR_SIZES = (32, 64, 128, 256, 512)
# Anchor aspect ratios, height / width.
_C.MODEL.RETINANET.ASPECT_RATIOS = (0.5, 1.0, 2.0)
# Stride of each FPN level P3..P7 in input pixels (must be 8, 16, ... doubling: the levels the backbone makes).
_C.MODEL.RETINANET.ANCHOR_STRIDES = (8, 16, 32, 64, 128)
# Anchors reaching more than this many pixels outside the image are ignored in training
# (-1 keeps all; maskrcnn-benchmark's RetinaNet never applied it, its recipes set -1).
_C.MODEL.RETINANET.STRADDLE_THRESH = 0
# Octave base: the sizes of one level are SIZE * OCTAVE ** (i / SCALES_PER_OCTAVE), i = 0 .. SCALES_PER_OCTAVE - 1.
_C.MODEL.RETINANET.OCTAVE = 2.0
# Anchor sizes per level and octave (int >= 1); anchors per location = this x len(ASPECT_RATIOS).
_C.MODEL.RETINANET.SCALES_PER_OCTAVE = 3
# P6 from C5 (True, the paper and maskrcnn-benchmark) or from P5 (False, torchvision's retinanet_resnet50_fpn).
_C.MODEL.RETINANET.USE_C5 = True
# 3x3 conv + ReLU layers in each of the classification and box towers, before the last conv (int >= 0).
_C.MODEL.RETINANET.NUM_CONVS = 4
# The box loss is divided by max(1, positives * BBOX_REG_WEIGHT) (maskrcnn-benchmark's normaliser; float > 0).
_C.MODEL.RETINANET.BBOX_REG_WEIGHT = 4.0
# beta of the smooth L1 box loss, in box-delta units (0: L1, torchvision's choice).
_C.MODEL.RETINANET.BBOX_REG_BETA = 0.11
# Test: best-scoring (anchor, class) candidates kept per FPN level before NMS (int > 0).
_C.MODEL.RETINANET.PRE_NMS_TOP_N = 1000
# Anchor-to-ground-truth IoU at or above which an anchor is positive, in [0, 1].
_C.MODEL.RETINANET.FG_IOU_THRESHOLD = 0.5
# IoU below which an anchor is negative (between the two it is ignored), in [0, FG_IOU_THRESHOLD].
_C.MODEL.RETINANET.BG_IOU_THRESHOLD = 0.4
# Focal loss alpha: weight of the positives in [0, 1] (negatives get 1 - alpha); < 0 turns weighting off.
_C.MODEL.RETINANET.LOSS_ALPHA = 0.25
# Focal loss gamma, the focusing exponent (float >= 0; 0 is the cross-entropy).
_C.MODEL.RETINANET.LOSS_GAMMA = 2.0
# Initial foreground probability of every logit (sets the last classification bias), in (0, 1).
_C.MODEL.RETINANET.PRIOR_PROB = 0.01
# Test: (anchor, class) candidates with a probability at or below this are dropped, in [0, 1).
_C.MODEL.RETINANET.INFERENCE_TH = 0.05
# Test: IoU threshold of the per-class NMS, in (0, 1].
_C.MODEL.RETINANET.NMS_TH = 0.4
# Test: detections kept per image after NMS (int > 0; maskrcnn-benchmark used 100, torchvision 300).
_C.MODEL.RETINANET.DETECTIONS_PER_IMG = 100
# Weights (wx, wy, ww, wh) of the anchor-to-box coder (maskrcnn-benchmark and torchvision: all 1).
_C.MODEL.RETINANET.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
# Normalisation of both losses: "maskrcnn-benchmark" (classification by positives + images over the
# batch, boxes by positives * BBOX_REG_WEIGHT) or "torchvision" (each image by its positives, then the mean).
_C.MODEL.RETINANET.LOSS_NORMALIZATION = "maskrcnn-benchmark"
# Round the octave anchor sizes down to integers, as torchvision's retinanet_resnet50_fpn does (bool).
_C.MODEL.RETINANET.ROUND_ANCHOR_SIZES = False
# Anchor grid stride per level from the padded batch size, stride = size // grid (torchvision's rule,
# e.g. 800 // 13 = 61 on P6), instead of ANCHOR_STRIDES (bool).
_C.MODEL.RETINANET.STRIDES_FROM_IMAGE = False

# ===========================================================================
# Pascal VOC and Cityscapes datasets
# ===========================================================================
# Pascal VOC (voc_* names): train on the objects marked <difficult> too (bool). They are always kept
# in the ground truth with a "difficult" field, and the VOC metric ignores them either way.
_C.DATASETS.VOC_USE_DIFFICULT = False
# VOC metric of the voc_* test sets: "auto" (the 11-point metric for VOC2007, the area under the
# precision-recall curve for later years), "11point" or "area". Mean AP at IoU 0.5 either way.
_C.TEST.VOC_METRIC = "auto"
# ===========================================================================
# deformable convolutions in the ResNet body (keys and defaults of maskrcnn-benchmark)
# ===========================================================================
# One bool per body stage res2..res5 (layer1..layer4): True makes the 3x3 conv of every block of that
# stage a deformable conv with its own zero-initialised offset conv (configs/dcn use (False, True, True, True)).
_C.MODEL.RESNETS.STAGE_WITH_DCN = (False, False, False, False)
# Deformable conv v2: offsets plus a sigmoid modulation mask per sample (True) or v1, offsets only (False).
_C.MODEL.RESNETS.WITH_MODULATED_DCN = False
# Deformable groups: the 3x3's input channels split into this many groups with their own offsets
# (int >= 1 dividing the bottleneck width of every deformable stage).
_C.MODEL.RESNETS.DEFORMABLE_GROUPS = 1


# ===========================================================================
# MobileNet backbones (torchvision's MobileNetV2 / V3-Large) and the RPN options of
# torchvision's MobileNet detectors
# ===========================================================================
# MobileNet bodies (CONV_BODY "MobileNetV2", "MobileNetV3-Large", "...-FPN") count 6 stages: the
# stem, then one per resolution-halving block, the last ending at features[-1];
# MODEL.BACKBONE.FREEZE_CONV_BODY_AT freezes the parameters of the first N (6 - torchvision's
# trainable_backbone_layers; 3 in its COCO detectors, 0 in the fine-tuning tutorial).
_C.MODEL.MOBILENET = CN()
# Batch norm of the MobileNet bodies: "FrozenBatchNorm2d" (fixed statistics and affine terms, eps
# 1e-5, as torchvision's detectors) or "BatchNorm2d" (trained, torchvision's classifier settings:
# eps 1e-5 for V2, eps 1e-3 and momentum 0.01 for V3; the fine-tuning tutorial).
_C.MODEL.MOBILENET.NORM = "FrozenBatchNorm2d"
# Stages (0 .. 5, increasing) whose outputs the body returns; empty: torchvision's default, the
# last two (4, 5) with an FPN, the last (5,) without one (which needs exactly one).
_C.MODEL.MOBILENET.RETURNED_STAGES = ()
# Give every feature level all ANCHOR_SIZES (torchvision's MobileNet detectors: ((32, .., 512),) * 3)
# instead of one size per level with RPN.USE_FPN; ANCHOR_STRIDE then has one entry per level (bool).
_C.MODEL.RPN.ANCHOR_SIZES_ON_EVERY_LEVEL = False
# Proposals whose objectness probability (sigmoid) is below this are dropped before the NMS, in
# training and test, as torchvision's rpn_score_thresh (0.05 in its MobileNet detectors), in [0, 1).
_C.MODEL.RPN.SCORE_THRESH = 0.0


# ===========================================================================
# test-time augmentation (maskrcnn-benchmark's TEST.BBOX_AUG keys and defaults)
# ===========================================================================
_C.TEST.BBOX_AUG = CN()
# Evaluate (tools/test_net.py, the Predictor) on several resized / mirrored views of each image and
# merge boxes and masks over them (detbench/engine/bbox_aug.py). The plain test view (INPUT.MIN_SIZE_TEST,
# MAX_SIZE_TEST) is always one of the views. Not with MODEL.KEYPOINT_ON or a plain RPN-only model (bool).
_C.TEST.BBOX_AUG.ENABLED = False
# Add the plain test view mirrored left-right (bool).
_C.TEST.BBOX_AUG.H_FLIP = False
# Shorter sides of the extra views, pixels (a tuple of ints > 0, each <= MAX_SIZE; () for none).
_C.TEST.BBOX_AUG.SCALES = ()
# Upper bound of the longer side of the SCALES views, pixels (int > 0).
_C.TEST.BBOX_AUG.MAX_SIZE = 4000
# Add each SCALES view mirrored left-right too (bool).
_C.TEST.BBOX_AUG.SCALE_H_FLIP = False


def get_cfg() -> CfgNode:
    """A fresh, mutable copy of the default config (its merge methods understand ``_BASE_``)."""
    return _C.clone()
