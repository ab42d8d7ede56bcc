"""The numbers Goyal et al. 2017 report, for tables that set ours beside them.

Top-1 error % on ImageNet (ResNet-50 unless named), mean and standard
deviation over 5 runs (None where the paper gives a single number), from
docs/paper.md, "Headline results" (the paper's Tables 1 and 2 and Figure 1).
Keys are the stems of the experiment files in gin/experiments/imagenet/.
Pure data: importing this module imports nothing else.
"""

# The paper's baseline minibatch and the reference rate for it (R1).
BASELINE_BATCH = 256
BASELINE_LR = 0.1

TOP1_ERROR = {
    "resnet50_kn256": (23.60, 0.12),
    "resnet50_kn8k": (23.74, 0.09),
    "resnet50_kn8k_no_warmup": (24.84, 0.37),
    "resnet50_kn8k_constant_warmup": (25.88, 0.56),
    "resnet50_kn8k_lr0.05": (24.27, 0.08),
    "resnet50_kn8k_lr0.2": (24.05, 0.18),
    "resnet50_kn8k_unscaled": (41.67, 0.10),
    "resnet50_kn8k_sqrt_scaling": (26.22, 0.03),
    "resnet50_kn16k": (24.79, 0.27),
    "resnet101_kn256": (22.08, None),
    "resnet101_kn8k": (22.36, None),
    "resnet50_kn256_no_zero_gamma": (23.84, None),
    "resnet50_kn8k_no_zero_gamma": (24.11, None),
}
