"""Published ResNet-50 ImageNet results past the paper's 8k (issue 20).

Top-1 accuracy % of the later large-minibatch records, for the first lines
of gin/experiments/imagenet/*_lars.gin and the README's "Past 8k" table.
Keys are the stems of those experiment files. Pure data: importing this
module imports nothing else.
"""

# stem -> (top-1 accuracy %, who, what they ran)
TOP1_ACCURACY = {
    # No LARS result at exactly 16k to cite: the row the layer-wise rates
    # must beat is Goyal et al.'s own SGD at 16k (error 24.79, Table 2 /
    # Figure 1).
    "resnet50_kn16k_lars": (75.21, "Goyal et al. 2017 (arXiv:1706.02677)",
                            "momentum SGD, linear scaling + gradual warmup"),
    "resnet50_kn32k_lars": (76.3, "Ying et al. 2018 (arXiv:1811.06992)",
                            "LARS on a TPU-v3 pod"),
    "resnet50_kn64k_lars": (75.8, "Jia et al. 2018 (arXiv:1807.11205)",
                            "LARS with mixed precision"),
}
