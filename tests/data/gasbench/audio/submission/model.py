import torch
import torch.nn as nn
from safetensors.torch import load_file


class TinyAudioDetector(nn.Module):
    """float32 [B, 96000] -> logits [B, 2]: log energy of 400-sample frames, its mean / std / mean
    change, linear head."""

    def __init__(self, num_classes=2):
        super().__init__()
        self.head = nn.Linear(3, num_classes)

    def features(self, x):
        frames = x.to(self.head.weight.dtype).reshape(x.shape[0], -1, 400)
        energy = torch.log(frames.pow(2).mean(dim=2) + 1e-6)
        change = (energy[:, 1:] - energy[:, :-1]).abs().mean(dim=1)
        return torch.stack([energy.mean(dim=1), energy.std(dim=1), change], dim=1)

    def forward(self, x):
        return self.head(self.features(x))


def load_model(weights_path, num_classes=2, **kwargs):
    model = TinyAudioDetector(num_classes)
    model.load_state_dict(load_file(weights_path))
    model.train(False)
    return model
