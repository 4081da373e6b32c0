import torch
import torch.nn as nn
from safetensors.torch import load_file


class TinyVideoDetector(nn.Module):
    """uint8 [B, T, 3, H, W] -> logits [B, 3] (real / synthetic / semisynthetic): per-frame conv
    features, their mean and their mean absolute change over time, linear head."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2)
        self.head = nn.Linear(12, num_classes)

    def features(self, x):
        b, t = x.shape[:2]
        frames = x.reshape(b * t, *x.shape[2:]).to(self.conv.weight.dtype) / 255.0
        h = torch.relu(self.conv(frames)).mean(dim=(2, 3)).reshape(b, t, -1)
        motion = (h[:, 1:] - h[:, :-1]).abs().mean(dim=1)
        return torch.cat([h.mean(dim=1), motion], dim=1)

    def forward(self, x):
        return self.head(self.features(x))


def load_model(weights_path, num_classes=3, **kwargs):
    model = TinyVideoDetector(num_classes)
    model.load_state_dict(load_file(weights_path))
    model.train(False)
    return model
