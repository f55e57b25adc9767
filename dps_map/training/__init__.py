"""The trainers of dps-map: one training loop (trainer.py), the data and measurement helpers they share
(common.py), and what each model adds: its network, loss and export (prior.py, adapter.py, latent_controlnet.py,
reference.py). The command lines are dps_map/train_prior.py, train_adapter.py and train_reference.py."""
