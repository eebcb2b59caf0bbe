"""Model registry: segmentation networks by name, with named feature taps."""
