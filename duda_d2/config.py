"""``add_duda_config(cfg)``: every configuration key this plugin adds to Detectron2's defaults.

Call it on ``detectron2.config.get_cfg()`` before merging a YAML file; a key a YAML file sets
that is neither Detectron2's nor listed here fails with Detectron2's own error. It is composed
of the ``add_*_config`` functions below, one per group of keys, which a plugin building on
this one may call on their own (as Panoptic-DeepLab's config builds on DeepLab's).
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN

__all__ = ["add_duda_config", "add_network_config", "add_self_training_config",
           "add_distillation_config", "add_uda_data_config", "add_solver_config",
           "add_panoptic_config", "load_config", "TASKS"]

# What the networks predict (``MODEL.TASK``): see duda_d2/modeling/tasks.
TASKS = ("semantic", "panoptic")


def add_network_config(cfg: CN) -> CN:
    """Backbones (MiT, timm, dilated ResNet), decoder heads, inference mode and SyncBN: the
    keys that describe one segmentation network."""
    # ---------------------------------------------------------------- backbones
    cfg.MODEL.MIT = CN()
    # SegFormer Mix Transformer variant: b0 (3.4M) b1 b2 b3 b4 b5 (81.4M encoder parameters).
    cfg.MODEL.MIT.VARIANT = "b0"
    # Dropout after attention projection and inside Mix-FFN (SegFormer: 0).
    cfg.MODEL.MIT.DROP_RATE = 0.0
    # Dropout on attention probabilities (SegFormer: 0).
    cfg.MODEL.MIT.ATTN_DROP_RATE = 0.0
    # Stochastic depth rate of the last block; grows linearly from 0 (SegFormer: 0.1).
    cfg.MODEL.MIT.DROP_PATH_RATE = 0.1
    # Feature maps returned: res2..res5 at strides 4, 8, 16, 32.
    cfg.MODEL.MIT.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # Recompute each transformer block's activations in the backward pass instead of keeping
    # them (torch.utils.checkpoint, non-reentrant; same losses and gradients, less memory, one
    # more forward of the encoder). Only where gradients are computed: frozen teachers and FD's
    # reference are unaffected.
    cfg.MODEL.MIT.ACTIVATION_CHECKPOINTING = False

    # ImageNet weights of the backbone alone, converted by tools/convert_pretrained.py, loaded
    # when the network is built ("" = random initialisation). Shapes must match; missing and
    # unexpected keys are listed in the log. (MODEL.WEIGHTS, loaded after, restores a full run.)
    cfg.MODEL.BACKBONE.WEIGHTS = ""

    cfg.MODEL.TIMM = CN()
    # Any timm model that supports features_only (resnet18, mobilenetv3_large_100,
    # efficientnet_b0, convnext_atto, ...). Never downloaded: use MODEL.BACKBONE.WEIGHTS.
    cfg.MODEL.TIMM.NAME = "resnet18"
    # Features returned, named by stride: res2 = 1/4, res3 = 1/8, res4 = 1/16, res5 = 1/32
    # (res1 = 1/2 where the model has it); names the model lacks are an error.
    cfg.MODEL.TIMM.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # Stochastic depth rate passed to timm models that support it.
    cfg.MODEL.TIMM.DROP_PATH_RATE = 0.0

    # Detectron2's ResNet (MODEL.RESNETS.*) with res4 dilated as well as res5: DeepLabV2 uses
    # RES4_DILATION 2 and RES5_DILATION 4 (output stride 8).
    cfg.MODEL.RESNETS.RES4_DILATION = 1
    # Stem of the dilated ResNet: "basic" (one 7x7 convolution, torchvision's) or "deep" (three
    # 3x3 convolutions of 32, 32, STEM_OUT_CHANNELS: the "V1c" stem of mmseg's resnet101_v1c,
    # which DAFormer/HRDA/MIC's DeepLabV2 uses; Detectron2's DeepLabStem; timm's resnet*c).
    cfg.MODEL.RESNETS.STEM_TYPE = "basic"

    # Several GPU processes: BatchNorm layers of the trained networks normalise with the
    # statistics of the whole global batch (torch.nn.SyncBatchNorm; CUDA only). Without it each
    # process normalises with its own share of the batch, and the running statistics are
    # averaged across processes after every step.
    cfg.MODEL.SYNC_BN = False

    # ---------------------------------------------------------------- heads
    # (Detectron2 already defines SEM_SEG_HEAD.NAME, IN_FEATURES, NUM_CLASSES, IGNORE_VALUE.)
    # Channels every level is projected to (SegFormer: 256 for MiT-B0/B1, 768 otherwise).
    cfg.MODEL.SEM_SEG_HEAD.EMBED_DIM = 256
    # Dropout2d before the classifier.
    cfg.MODEL.SEM_SEG_HEAD.DROPOUT = 0.1
    # DAFormerHead context fusion: "aspp_dw" (depth-wise separable ASPP, DAFormer's default),
    # "aspp" (plain ASPP) or "conv1x1" (SegFormer-like 1x1 fusion).
    cfg.MODEL.SEM_SEG_HEAD.FUSION = "aspp_dw"
    # DAFormerHead: recompute the context fusion (the ASPP branches at stride 4) in the backward
    # pass instead of keeping its activations (as MODEL.MIT.ACTIVATION_CHECKPOINTING).
    cfg.MODEL.SEM_SEG_HEAD.ACTIVATION_CHECKPOINTING = False
    # Dilations of the DAFormerHead ASPP branches (1 = a 1x1 branch).
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DILATIONS = [1, 6, 12, 18]
    # Dilations of DeepLabV2Head's parallel 3x3 classifiers, whose logits are summed.
    cfg.MODEL.SEM_SEG_HEAD.DEEPLAB_DILATIONS = [6, 12]

    # ---------------------------------------------------------------- inference
    cfg.MODEL.INFERENCE = CN()
    # "whole": one forward of the full (padded) image; "slide": overlapping windows whose logits
    # are averaged (for test images larger than what the network was trained on).
    cfg.MODEL.INFERENCE.MODE = "whole"
    # Sliding-window size and step, (height, width) in pixels of the resized test image.
    cfg.MODEL.INFERENCE.CROP_SIZE = (512, 512)
    cfg.MODEL.INFERENCE.STRIDE = (341, 341)
    return cfg


def add_self_training_config(cfg: CN) -> CN:
    """``MODEL.UDA.*``: mean-teacher self-training (DAFormer/MIC)."""
    # ---------------------------------------------------------------- self-training UDA
    # Used by SelfTrainingUDA (DAFormer/MIC) and by the large pair of DUDA.
    cfg.MODEL.UDA = CN()
    # Teacher weights: EMA of the student with alpha_t = min(1 - 1/(t+1), EMA_ALPHA).
    cfg.MODEL.UDA.EMA_ALPHA = 0.999
    # Pseudo-label confidence threshold tau (0.968 assumes ImageNet-pretrained encoders; models
    # trained from scratch rarely reach it, see configs/synthetic/self_training.yaml).
    cfg.MODEL.UDA.PSEUDO_THRESHOLD = 0.968
    # "batch": every target pixel weighted by the batch's share of confident pixels (DAFormer);
    # "pixel": each pixel weighted 1 if confident, else 0.
    cfg.MODEL.UDA.PSEUDO_WEIGHT_MODE = "batch"
    # Pseudo-label weight 0 on this many top / bottom rows of the target crop (Cityscapes at
    # 512 crops: 15 / 120, the sky border and the ego-car hood).
    cfg.MODEL.UDA.PSEUDO_IGNORE_TOP = 0
    cfg.MODEL.UDA.PSEUDO_IGNORE_BOTTOM = 0
    # Normalisation in the teacher: "batch" statistics (DAFormer/MIC; averaged running statistics
    # of a network trained from scratch give near-uniform outputs) or "running".
    cfg.MODEL.UDA.TEACHER_BN = "batch"
    # Strong augmentation of mixed images: colour-jitter strength and probability, Gaussian
    # blur sigma range and probability.
    cfg.MODEL.UDA.COLOR_JITTER = 0.2
    cfg.MODEL.UDA.COLOR_JITTER_P = 0.8
    cfg.MODEL.UDA.BLUR_SIGMA = (0.15, 1.15)
    cfg.MODEL.UDA.BLUR_P = 0.5
    # "batch": one jitter coin and one blur coin for the whole batch (DACS/DAFormer/MIC; the
    # factors and sigma are still drawn per image); "image": coins flipped per image.
    cfg.MODEL.UDA.AUGMENTATION_COIN = "batch"
    # ClassMix classes: "batch" = half of the values present in the whole source batch, ignore
    # label included, drawn per image (DACS's get_class_masks, used by DAFormer/MIC); "image" =
    # half of each image's own classes, ignore excluded.
    cfg.MODEL.UDA.CLASSMIX_CLASSES = "batch"
    # Thing-class ImageNet feature distance on source images (DAFormer: 0.005; 0 = off): a frozen
    # copy of the initial backbone; distance on the last feature map where a cell's label is a
    # thing class covering at least FD_PURITY of it.
    cfg.MODEL.UDA.FD_LAMBDA = 0.0
    cfg.MODEL.UDA.FD_CLASSES = [6, 7, 11, 12, 13, 14, 15, 16, 17, 18]
    cfg.MODEL.UDA.FD_PURITY = 0.75
    # FD needs ImageNet weights (MODEL.BACKBONE.WEIGHTS of the network it regularises; for DUDA
    # the large pair's, in MODEL.DUDA.LARGE_NETWORK_OPTS): without them the reference would be
    # the random initialisation, which is an error unless this is True (tests, benchmarks).
    cfg.MODEL.UDA.FD_RANDOM_REFERENCE = False
    # Forward passes of frozen networks under autocast ("" = float32, "bfloat16", "float16"):
    # the EMA teacher's on the target (weights stay float32, so the EMA stays exact) and FD's
    # ImageNet reference's; their outputs are cast back to float32. Reduced precision changes
    # the numbers: the defaults stay float32 unless a benchmark shows no loss.
    cfg.MODEL.UDA.TEACHER_AUTOCAST = ""
    cfg.MODEL.UDA.FD_REFERENCE_AUTOCAST = ""
    # Masked image consistency (MIC; 0 = off, MIC: 1.0): the student sees the target with
    # MIC_MASK_RATIO of its MIC_BLOCK_SIZE blocks removed and learns the teacher's pseudo-labels.
    cfg.MODEL.UDA.MIC_LAMBDA = 0.0
    cfg.MODEL.UDA.MIC_MASK_RATIO = 0.7
    cfg.MODEL.UDA.MIC_BLOCK_SIZE = 32
    # Which images MIC masks, as MIC's mask_mode: "separatetrgaug" (the target batch, colour-
    # jittered and blurred first; MIC for GTA/SYNTHIA -> Cityscapes), "separatetrg" (target, no
    # augmentation), "separate" (the first source and the first target image of the batch, no
    # augmentation; MIC for Cityscapes -> ACDC / Dark Zurich), "separateaug", "separatesrc",
    # "separatesrcaug".
    cfg.MODEL.UDA.MIC_MODE = "separatetrgaug"
    # Network used at inference / evaluation: "student" or "teacher".
    cfg.MODEL.UDA.INFERENCE_NETWORK = "student"
    # Write debug panels (source, target, pseudo-label, mix mask, prediction) to TensorBoard
    # every this many iterations (0 = never).
    cfg.MODEL.UDA.DEBUG_PERIOD = 0
    return cfg


def add_distillation_config(cfg: CN) -> CN:
    """``MODEL.DUDA.*``: DUDA's large pair and the small student's distillation."""
    # ---------------------------------------------------------------- DUDA
    # DUDA trains a large EMA teacher, a large student and the small student (the deployed
    # network, described by the usual MODEL.BACKBONE / MODEL.SEM_SEG_HEAD keys). MODEL.UDA.*
    # configures the large pair's self-training.
    cfg.MODEL.DUDA = CN()
    # Config file whose MODEL section describes the large networks (e.g.
    # configs/networks/mit_b5_daformer.yaml), and KEY VALUE overrides for it (e.g. its
    # MODEL.BACKBONE.WEIGHTS). Relative paths: to the working directory, else the repository.
    cfg.MODEL.DUDA.LARGE_NETWORK = "configs/networks/mit_b5_daformer.yaml"
    cfg.MODEL.DUDA.LARGE_NETWORK_OPTS = []
    # A trained large network the large student and its EMA teacher start from (a
    # tools/convert_model.py or tools/export_student.py file, e.g. a released DAFormer model
    # converted by `convert_model.py from-mmseg`); "" = from MODEL.BACKBONE.WEIGHTS (ImageNet)
    # as usual. FD's ImageNet reference stays the large networks' MODEL.BACKBONE.WEIGHTS.
    cfg.MODEL.DUDA.LARGE_NETWORK_WEIGHTS = ""
    # Activation checkpointing of the large networks (sets MODEL.MIT.ACTIVATION_CHECKPOINTING
    # and MODEL.SEM_SEG_HEAD.ACTIVATION_CHECKPOINTING of the large network's config, whatever
    # LARGE_NETWORK_OPTS say): the large student's encoder blocks and context fusion are
    # recomputed in the backward pass; the numbers do not change. On by default: at the paper's
    # size (crop 512, 2 + 2, MiT-B5/DAFormer pair, B0 student, FD and MIC) DUDA then peaks at
    # 0.64x the memory of plain single-pair self-training for 1.13x its step time
    # (tools/benchmark_train.py, README "Training cost"). The CPU-sized synthetic configs,
    # where memory is no concern, switch it off.
    cfg.MODEL.DUDA.LARGE_ACTIVATION_CHECKPOINTING = True
    # Gradual distillation beta(t): 0 for PRE_ADAPTATION_ITERS, then up to BETA_MAX over
    # RAMP_ITERS ("linear", "cosine", or "constant" = a step). -1 = a quarter of MAX_ITER.
    cfg.MODEL.DUDA.PRE_ADAPTATION_ITERS = -1
    cfg.MODEL.DUDA.RAMP_ITERS = -1
    cfg.MODEL.DUDA.BETA_MAX = 1.0
    cfg.MODEL.DUDA.SCHEDULE = "linear"
    # KD temperature tau of KL_tau = tau^2 KL(softmax(z_teacher/tau) || softmax(z_small/tau)).
    cfg.MODEL.DUDA.KD_TEMPERATURE = 1.0
    # Teacher weights: the EMA teacher on the clean target (pi_T) and the large student on the
    # mixed image (pi_G); either may be 0.
    cfg.MODEL.DUDA.EMA_TEACHER_WEIGHT = 0.5
    cfg.MODEL.DUDA.LARGE_STUDENT_WEIGHT = 0.5
    # Further frozen teachers of any architecture, distilled on the clean target: one config
    # file, one weight file (a tools/train_net.py or tools/export_student.py checkpoint) and
    # one loss weight per teacher.
    cfg.MODEL.DUDA.EXTRA_TEACHER_CONFIGS = []
    cfg.MODEL.DUDA.EXTRA_TEACHER_WEIGHTS = []
    cfg.MODEL.DUDA.EXTRA_TEACHER_LOSS_WEIGHTS = []
    # Pseudo-labels from the weighted mean probability of the EMA teacher and the extra
    # teachers on the clean target (instead of the EMA teacher alone).
    cfg.MODEL.DUDA.PSEUDO_LABEL_FROM_ALL_TEACHERS = False
    # Inconsistency class weights: c = 1 + GAMMA (u / mean(u) - 1), u = EMA (MOMENTUM) of
    # 1 - IoU between the small student's and the teacher's target labels; clipped to CLIP and
    # renormalised to mean 1. GAMMA 0 switches them off.
    cfg.MODEL.DUDA.INCONSISTENCY_GAMMA = 1.0
    cfg.MODEL.DUDA.INCONSISTENCY_MOMENTUM = 0.99
    cfg.MODEL.DUDA.INCONSISTENCY_CLIP = (0.5, 3.0)
    # After pre-adaptation + ramp, stop training the large pair (no large backward; the
    # teacher stays fixed; the large student's mixed-image logits come from a no-grad pass).
    cfg.MODEL.DUDA.FREEZE_LARGE_AFTER_PRE_ADAPTATION = False
    # Network used at inference / evaluation: "small_student", "large_student" or "teacher".
    cfg.MODEL.DUDA.INFERENCE_NETWORK = "small_student"
    return cfg


def add_uda_data_config(cfg: CN) -> CN:
    """``INPUT``, ``DATASETS`` and ``DATALOADER`` keys of a UDA run: per-domain sizes and
    data sets, batches and rare class sampling."""
    # ---------------------------------------------------------------- input
    # Every image of a domain is first resized to this fixed (height, width); (0, 0) keeps the
    # file's size. UDA benchmarks use GTA5 (704, 1280), SYNTHIA (760, 1280), Cityscapes
    # (512, 1024), ACDC / Dark Zurich (540, 960). Random crops (INPUT.CROP) follow the resize.
    cfg.INPUT.SOURCE_SIZE = (0, 0)
    cfg.INPUT.TARGET_SIZE = (0, 0)
    # A training crop is re-drawn (up to 10 times) while one class covers more than this share
    # of it (DAFormer: 0.75); 1.0 switches the constraint off.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Test images are resized to this (height, width) before inference; predictions are
    # resized back to the label's size for evaluation. (0, 0) keeps the file's size.
    cfg.INPUT.TEST_SIZE = (0, 0)

    # ---------------------------------------------------------------- UDA data
    # Labelled source and unlabelled target training sets of a UDA run (registered names).
    cfg.DATASETS.SOURCE_TRAIN = ()
    cfg.DATASETS.TARGET_TRAIN = ()
    # Your own unlabelled images as data sets, "NAME=SPEC" each: SPEC is a folder (every image
    # below it), a glob pattern or a .txt list of paths (duda_d2/data/datasets/image_folders.py).
    # The NAMEs can then be used in TARGET_TRAIN or TEST (--eval-only writes predictions and
    # overlays for a data set without labels). They share the source's class list.
    cfg.DATASETS.IMAGE_FOLDERS = []
    # Your own labelled data sets with their own class list, "NAME=FOLDER" each, FOLDER written
    # by datasets/prepare_labelled_folder.py (duda_d2/data/datasets/labelled_folders.py). Every
    # data set of a run must share one class list, of MODEL.SEM_SEG_HEAD.NUM_CLASSES classes.
    cfg.DATASETS.LABELLED_FOLDERS = []
    # --eval-only on a benchmark's test split (acdc_test, dark_zurich_test) writes the
    # test server's submission archive; False: train ids, as DAFormer/HRDA/MIC submitted them;
    # True: Cityscapes label ids.
    cfg.TEST.SUBMISSION_LABEL_IDS = False
    # Label-free checkpoint signals, logged every TEST.EVAL_PERIOD as label_free/* (teacher
    # confidence, confident share, student-teacher agreement on the first LABEL_FREE_IMAGES
    # images of TARGET_TRAIN; mIoU on SOURCE_VAL): what can choose a checkpoint when the target
    # has no labels (duda_d2/engine/label_free.py; README "Your own data"). 0 = off.
    cfg.TEST.LABEL_FREE_IMAGES = 0
    # Labelled source images kept out of training, for the source-val signal.
    cfg.DATASETS.SOURCE_VAL = ()
    # Images per iteration of each domain, summed over all processes (DAFormer: 2 + 2).
    cfg.DATALOADER.SOURCE_IMS_PER_BATCH = 2
    cfg.DATALOADER.TARGET_IMS_PER_BATCH = 2
    cfg.DATALOADER.RCS = CN()
    # Rare class sampling of source images (DAFormer): draw class c with probability
    # softmax((1 - f_c) / TEMPERATURE), f_c its pixel share, then an image holding more than
    # MIN_PIXELS pixels of c. Needs the statistics written by the dataset's prepare script.
    cfg.DATALOADER.RCS.ENABLED = False
    cfg.DATALOADER.RCS.TEMPERATURE = 0.01
    cfg.DATALOADER.RCS.MIN_PIXELS = 3000
    # The crop of an image drawn for class c is re-drawn (up to 10 times, as MIC) until it holds
    # more than MIN_PIXELS * MIN_CROP_RATIO pixels of c (DAFormer/MIC: 0.5 at 512 crops; HRDA:
    # 2.0 at 1024 crops; 0 = never re-drawn).
    cfg.DATALOADER.RCS.MIN_CROP_RATIO = 0.5
    # With RCS enabled and the statistics missing: False = error naming the prepare script,
    # True = warn and sample uniformly.
    cfg.DATALOADER.RCS.ALLOW_UNIFORM_FALLBACK = False
    return cfg


def add_solver_config(cfg: CN) -> CN:
    """``SOLVER.*``: optimiser, learning-rate schedule, backward, DDP, AMP."""
    # ---------------------------------------------------------------- solver
    # "ADAMW" (the UDA recipe) or "SGD" (Detectron2's default optimiser).
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BETAS = (0.9, 0.999)
    # Learning-rate factor of decoder-head parameters (DAFormer: 10).
    cfg.SOLVER.HEAD_LR_MULTIPLIER = 10.0
    # Exponent of the poly decay used by LR_SCHEDULER_NAME "WarmupPolyLR" (DAFormer: 1.0).
    cfg.SOLVER.POLY_POWER = 1.0
    # Back-propagate each network's losses right after its forward pass (frees each graph
    # before the next forward: peak memory is one graph, not all of them). False = one
    # backward of the summed losses, as Detectron2's SimpleTrainer.
    cfg.SOLVER.BACKWARD_PER_STAGE = True
    # Several processes: each trainable network is wrapped in PyTorch's
    # DistributedDataParallel; True lets DDP find parameters a step does not use (slower;
    # needed only for a network with branches that a forward pass may skip).
    cfg.SOLVER.DDP_FIND_UNUSED_PARAMETERS = False
    # Autocast precision when SOLVER.AMP.ENABLED: "float16" (with a gradient scaler) or
    # "bfloat16" (no scaler needed).
    cfg.SOLVER.AMP.PRECISION = "float16"
    return cfg


def add_panoptic_config(cfg: CN) -> CN:
    """Bottom-up panoptic segmentation (Panoptic-DeepLab) for ``MODEL.TASK "panoptic"``.

    The keys keep Detectron2's ``projects/panoptic_deeplab`` names (``MODEL.INS_EMBED_HEAD``,
    ``MODEL.PANOPTIC_DEEPLAB``, ``INPUT.GAUSSIAN_SIGMA`` ...) and its Cityscapes values, but
    are added here rather than by ``add_panoptic_deeplab_config``, which would overwrite this
    plugin's ``SEM_SEG_HEAD.ASPP_DILATIONS`` and ``SOLVER.OPTIMIZER``.
    """
    # "semantic": one semantic head. "panoptic": the semantic head (MODEL.SEM_SEG_HEAD) plus an
    # instance head (MODEL.INS_EMBED_HEAD) predicting instance centres and offsets; needs
    # panoptic data sets (synthetic_uda_*_panoptic, cityscapes_fine_panoptic_*, ...).
    cfg.MODEL.TASK = "semantic"

    # ---------------------------------------------------------------- instance head
    cfg.MODEL.INS_EMBED_HEAD = CN()
    # "DAFormerInsEmbedHead" (DAFormer-style context fusion, for the large networks) or
    # "LightInsEmbedHead" (Panoptic-DeepLab's depth-wise separable variant, for small students).
    cfg.MODEL.INS_EMBED_HEAD.NAME = "LightInsEmbedHead"
    cfg.MODEL.INS_EMBED_HEAD.IN_FEATURES = ["res2", "res3", "res5"]
    # LightInsEmbedHead (Panoptic-DeepLab's decoder): projected levels, ASPP on the last one.
    cfg.MODEL.INS_EMBED_HEAD.PROJECT_FEATURES = ["res2", "res3"]
    cfg.MODEL.INS_EMBED_HEAD.PROJECT_CHANNELS = [32, 64]
    cfg.MODEL.INS_EMBED_HEAD.ASPP_CHANNELS = 256
    cfg.MODEL.INS_EMBED_HEAD.ASPP_DILATIONS = [6, 12, 18]
    cfg.MODEL.INS_EMBED_HEAD.ASPP_DROPOUT = 0.1
    cfg.MODEL.INS_EMBED_HEAD.CONVS_DIM = 128
    # Channels of the extra convolution before the centre / offset predictors.
    cfg.MODEL.INS_EMBED_HEAD.HEAD_CHANNELS = 32
    cfg.MODEL.INS_EMBED_HEAD.COMMON_STRIDE = 4
    cfg.MODEL.INS_EMBED_HEAD.NORM = "BN"
    # DAFormerInsEmbedHead: level embedding width, fusion ("aspp_dw", "aspp", "conv1x1") and
    # its dilations, as MODEL.SEM_SEG_HEAD's DAFormerHead.
    cfg.MODEL.INS_EMBED_HEAD.EMBED_DIM = 256
    cfg.MODEL.INS_EMBED_HEAD.FUSION = "aspp_dw"
    cfg.MODEL.INS_EMBED_HEAD.FUSION_DILATIONS = [1, 6, 12, 18]
    # Loss weights: CE(z) + CENTER_LOSS_WEIGHT MSE(h) + OFFSET_LOSS_WEIGHT L1(o) (Panoptic-DeepLab).
    cfg.MODEL.INS_EMBED_HEAD.CENTER_LOSS_WEIGHT = 200.0
    cfg.MODEL.INS_EMBED_HEAD.OFFSET_LOSS_WEIGHT = 0.01

    # ---------------------------------------------------------------- targets
    # Gaussian sigma (pixels) of the centre heat-map at each thing instance's centre of mass:
    # 8 for Cityscapes crops of 512x1024; scale it with the image size.
    cfg.INPUT.GAUSSIAN_SIGMA = 8
    # Offsets are learned on thing pixels only.
    cfg.INPUT.IGNORE_STUFF_IN_OFFSET = True
    # Instances smaller than this area (pixels) get this semantic loss weight (Cityscapes 4096, 3).
    cfg.INPUT.SMALL_INSTANCE_AREA = 4096
    cfg.INPUT.SMALL_INSTANCE_WEIGHT = 3
    cfg.INPUT.IGNORE_CROWD_IN_SEMANTIC = False

    # ---------------------------------------------------------------- post-processing
    cfg.MODEL.PANOPTIC_DEEPLAB = CN()
    # Stuff segments smaller than STUFF_AREA pixels at STUFF_AREA_REFERENCE_SIZE (H, W) become
    # void; the area is scaled with the image (2048 px at 1024x2048 Cityscapes images).
    cfg.MODEL.PANOPTIC_DEEPLAB.STUFF_AREA = 2048
    cfg.MODEL.PANOPTIC_DEEPLAB.STUFF_AREA_REFERENCE_SIZE = (1024, 2048)
    cfg.MODEL.PANOPTIC_DEEPLAB.CENTER_THRESHOLD = 0.1
    cfg.MODEL.PANOPTIC_DEEPLAB.NMS_KERNEL = 7
    cfg.MODEL.PANOPTIC_DEEPLAB.TOP_K_INSTANCE = 200
    # Pseudo-targets: the teacher's instances whose centre score is below this are dropped (their
    # pixels keep the semantic pseudo-label but get no centre / offset target).
    cfg.MODEL.PANOPTIC_DEEPLAB.PSEUDO_CENTER_THRESHOLD = 0.3
    return cfg


def add_duda_config(cfg: CN) -> CN:
    """Add the plugin's keys (with defaults) to ``cfg`` in place and return it."""
    add_network_config(cfg)
    add_panoptic_config(cfg)
    add_self_training_config(cfg)
    add_distillation_config(cfg)
    add_uda_data_config(cfg)
    add_solver_config(cfg)
    return cfg


def load_config(config_file: str, opts=()) -> CN:
    """Detectron2 defaults + the plugin's keys, then ``config_file``, then ``KEY VALUE`` opts;
    registers the config's own data sets (``DATASETS.LABELLED_FOLDERS``, ``IMAGE_FOLDERS``)."""
    from detectron2.config import get_cfg

    from .data.datasets.image_folders import register_config_folders
    from .data.datasets.labelled_folders import register_config_labelled_folders

    cfg = add_duda_config(get_cfg())
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    # Your own data sets (lazily: nothing but a prepared folder's description is read here);
    # labelled first, so that an image folder takes the class list of the run's source.
    register_config_labelled_folders(cfg)
    register_config_folders(cfg)
    return cfg
