"""The factory for tests/python/resnet_bn_make.py's ResNet-18: the model and the tiny batch beside the
checkpoint."""

import os

import torch
import torchvision


def build(checkpoint):
    ev = torch.load(os.path.join(os.path.dirname(checkpoint), "eval.pt"), weights_only=True)
    return torchvision.models.resnet18(num_classes=10), (ev["inputs"], ev["targets"]), "cross_entropy"
