"""prokd: knowledge distillation for prostate MRI segmentation.

Heavy teachers (or several teachers trained on small, site-specific image sets) are distilled into a
small student network that runs fast on a CPU. See ``docs/architecture.md`` for the pipeline.
"""

__version__ = "0.1.0"
