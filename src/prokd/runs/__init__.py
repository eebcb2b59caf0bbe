"""RUN folders and checkpoints: the files every command reads and writes (training, distillation, prediction,
evaluation, experiments, reports), below all of them."""
