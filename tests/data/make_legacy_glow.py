# Writes tests/data/legacy_v010_glow.pt with flowinfer 0.1.0 (commit 0bc5105, the code before
# ActNorm and ActNorm2d were merged): state dicts of a small image Glow and vector Glow after
# their data-dependent start, with inputs and log densities to compare after loading.
import sys  # run as: cd ORIG_CHECKOUT && PYTHONPATH=. python make_legacy_glow.py OUT.pt

import torch

import flowinfer as fi

print("flowinfer from", fi.__file__)
torch.manual_seed(0)
image = fi.build_flow("glow", shape=(1, 4, 4), levels=2, steps_per_level=1, hidden_channels=4)
vector = fi.build_flow("glow", dim=3, num_layers=2, hidden=(8,))
x_image = 2.0 + 0.5 * torch.randn(16, 1, 4, 4)
x_vector = 1.0 + 3.0 * torch.randn(32, 3)
image.log_prob(x_image)     # data-dependent ActNorm start
vector.log_prob(x_vector)
with torch.no_grad():
    for p in list(image.parameters()) + list(vector.parameters()):
        p.add_(0.05 * torch.randn_like(p))
out = {
    "image_state": image.state_dict(), "vector_state": vector.state_dict(),
    "x_image": x_image[:4], "x_vector": x_vector[:4],
    "image_log_prob": image.log_prob(x_image[:4]).detach(),
    "vector_log_prob": vector.log_prob(x_vector[:4]).detach(),
}
torch.save(out, sys.argv[1])
print({k: v for k, v in out.items() if k.endswith("log_prob")})
