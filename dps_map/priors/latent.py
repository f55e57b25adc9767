"""A latent-diffusion prior (Stable Diffusion 2; Rombach et al. 2022) built from diffusers' classes.

The chain runs on latents z (4 x H/8 x W/8 for SD): ``predict(z, t)`` is the UNet2DConditionModel
conditioned on the empty-prompt embedding (a v-model's output is turned into eps by
:func:`dps_map.diffusion.eps_from_v`), so every sampler works unchanged on z. Images are
``decode(z) = D(z / s)`` with the AutoencoderKL decoder D and its scaling factor s; ``encode(x) = s E(x)``
(the posterior mean).

The one seam with operators and the runner: :meth:`LatentPrior.sampling_operator` wraps the
pixel-space operator A into :class:`DecodedOperator`, z -> A(D(z)), so the samplers' data term is
||y - A(D(z0_hat))|| (as the authors' code, and PSLD's/FreeDoM's measurement term) and its gradient is
one VJP through the UNet and the decoder. The runner decodes the final z and writes images, so
metrics, resume and aggregation see pixels as for any other prior.

Sources (prior.source): 'random' builds small random networks from the configs under unet/vae/
text_encoder (prior=sd2_tiny; the CPU tests), 'folder' loads a local copy of the
stabilityai/stable-diffusion-2-base repository (prior=sd2_base; local_files_only, safetensors,
nothing downloaded). The text encoder runs once to embed the empty prompt; the embedding is cached
(prior.embedding_cache) so later runs need neither text encoder nor tokenizer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from ..diffusion import alphas_cumprod, eps_from_v, make_betas
from ..errors import ConfigError, MissingFileError
from ..io import absolute_path
from ..operators.base import Operator
from .base import Prior

log = logging.getLogger(__name__)

PREDICTION_TYPES = ("epsilon", "v_prediction")
#: files of the diffusers folder that every run needs (the text encoder only until the embedding is cached)
NETWORK_FILES = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                 "vae/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json")
TEXT_FILES = ("text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/tokenizer_config.json")
#: the tokenizer's vocabulary: SD 2-base's vocab.json + merges.txt, or a tokenizer.json (what transformers 5 saves)
TOKENIZER_VOCABS = (("tokenizer/vocab.json", "tokenizer/merges.txt"), ("tokenizer/tokenizer.json",))
#: the Hugging Face model prior=sd2_base is a copy of (`python -m dps_map.weights paper-sd2 --download` fetches it)
SD2_MODEL_ID = "stabilityai/stable-diffusion-2-base"
FOLDER_WHERE = (f"the Hugging Face model {SD2_MODEL_ID} (https://huggingface.co/{SD2_MODEL_ID}; diffusers layout "
                "with *.safetensors: unet/, vae/, scheduler/, text_encoder/, tokenizer/; or "
                "`python -m dps_map.weights paper-sd2 --download` with the same paths.* overrides)")
FOLDER_OVERRIDE = "paths.sd2_base=/path/to/stable-diffusion-2-base (or env DPS_MAP_SD2_BASE)"


class LatentPrior(Prior):
    """eps-prediction prior on SD latents (see the module docstring).

    Args:
        unet: diffusers UNet2DConditionModel (frozen).
        vae: diffusers AutoencoderKL (frozen).
        text_embedding: (1, L, D) embedding of the empty prompt (the UNet's encoder_hidden_states).
        betas: training betas (SD: scaled_linear 0.00085..0.012, 1000 steps).
        prediction_type: 'epsilon' (SD 2-base) or 'v_prediction' (SD 2 768-v).
        image_size: pixel size of the decoded images.
    """

    kind = "latent"

    def __init__(self, unet, vae, text_embedding: torch.Tensor, betas, prediction_type: str = "epsilon",
                 image_size: int = 512):
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"latent prior: prediction_type must be one of {PREDICTION_TYPES}, got '{prediction_type}'")
        self.unet = unet.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.register_buffer("text_embedding", text_embedding.detach().float(), persistent=False)
        self.betas = np.asarray(betas, dtype=np.float64)
        self.register_buffer("abar", torch.tensor(alphas_cumprod(self.betas), dtype=torch.float32), persistent=False)
        self.prediction_type = prediction_type
        self.scaling_factor = float(vae.config.scaling_factor)
        self.downscale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = int(vae.config.latent_channels)
        if image_size % self.downscale:
            raise ConfigError(f"latent prior: image_size {image_size} is not a multiple of the VAE's factor {self.downscale}")
        self.image_size = int(image_size)
        self.perf = {"precision": "fp32", "grad_checkpoint": False}
        self._autocast_dtype = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        side = self.image_size // self.downscale
        return (self.latent_channels, side, side)

    def configure_perf(self, precision="fp32", grad_checkpoint=False, **others) -> "LatentPrior":
        """GPU knobs (conf/perf/default.yaml): ``precision`` (bf16/fp16: the UNet under torch.autocast;
        the VAE always runs in fp32, as diffusers upcasts it, and the diffusion maths stay fp32) and
        ``grad_checkpoint`` (diffusers' gradient checkpointing of the UNet and the VAE: a 512x512 VJP through
        the decoder keeps far fewer activations). Other knobs are ignored, with a warning."""
        from .adm import PRECISION_DTYPES

        ignored = sorted(k for k, v in others.items() if v and k not in ("compile_mode", "compile_backend"))
        if ignored:
            log.warning("latent priors support perf.precision and perf.grad_checkpoint only: %s ignored", ignored)
        if precision not in PRECISION_DTYPES:
            raise ConfigError(f"precision must be one of {', '.join(PRECISION_DTYPES)}, got '{precision}'")
        self._autocast_dtype = PRECISION_DTYPES[precision]
        for module in (self.unet, self.vae):
            module.enable_gradient_checkpointing() if grad_checkpoint else module.disable_gradient_checkpointing()
        self.perf = {"precision": precision, "grad_checkpoint": bool(grad_checkpoint)}
        return self

    def autocast(self, device):
        """The UNet's mixed-precision context (the VAE runs outside it: :meth:`full_precision`)."""
        if self._autocast_dtype is None:
            return super().autocast(device)
        return torch.autocast(device_type=torch.device(device).type, dtype=self._autocast_dtype)

    @staticmethod
    def full_precision(device):
        """Autocast off: the VAE decodes and encodes in fp32 whatever the UNet's precision (diffusers' upcast_vae)."""
        return torch.autocast(device_type=torch.device(device).type, enabled=False)

    def predict(self, z, t):
        context = self.text_embedding.to(z.dtype).expand(z.shape[0], -1, -1)
        with self.autocast(z.device):
            out = self.unet(z, t, encoder_hidden_states=context).sample.to(z.dtype)
        if self.prediction_type == "v_prediction":
            out = eps_from_v(z, out, self.abar[t].to(z.dtype).reshape(-1, 1, 1, 1))
        return out, None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (not clamped) from latents: D(z / s), in fp32."""
        with self.full_precision(z.device):
            return self.vae.decode(_at_least_fp32(z) / self.scaling_factor).sample.to(z.dtype)

    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the encoder's Gaussian E(x), unscaled (PSLD's encoding='sample' draws from it)."""
        dist = self.vae.encode(x).latent_dist
        return dist.mean, dist.std

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents of images in [-1, 1]: s E(x) (the mean of the encoder's Gaussian), in fp32."""
        with self.full_precision(x.device):
            return self.vae.encode(_at_least_fp32(x)).latent_dist.mean.to(x.dtype) * self.scaling_factor

    def sampling_operator(self, operator: Operator) -> "DecodedOperator":
        """The operator the samplers see: z -> A(D(z))."""
        return DecodedOperator(operator, self)


def _at_least_fp32(v: torch.Tensor) -> torch.Tensor:
    return v.float() if v.dtype in (torch.float16, torch.bfloat16) else v


class DecodedOperator(Operator):
    """A composed with the prior's decoder: forward(z) = A(D(z)). Samplers call it like any operator;
    a call with gradients enabled on z is the forward half of a VJP through the decoder and is counted
    as ``decoder_vjp`` (else ``decoder_forward``); the sampler copies ``stats`` into its cost stats.

    ``naive(y)`` is the latent of A's naive image (CCDF starts from it); ``operator`` is A itself (the
    ControlNet hint and the runner's metrics use pixels)."""

    def __init__(self, operator: Operator, prior: LatentPrior):
        self.operator, self.prior = operator, prior
        self.linear = False
        self.stats = {"decoder_forward": 0, "decoder_vjp": 0}

    def reset_stats(self) -> None:
        self.stats = {"decoder_forward": 0, "decoder_vjp": 0}

    def forward(self, z):
        return self.operator(self.decode(z))

    def decode(self, z):
        """D(z), counted (a VJP when z carries gradients)."""
        self.stats["decoder_vjp" if (torch.is_grad_enabled() and z.requires_grad) else "decoder_forward"] += 1
        return self.prior.decode(z)

    def encode(self, x):
        """E(x) (PSLD's gluing term differentiates through it; counted as encoder calls)."""
        self.stats["encoder"] = self.stats.get("encoder", 0) + 1
        return self.prior.encode(x)

    def restrict(self, y):
        return self.operator.restrict(y)

    def naive(self, y):
        with torch.no_grad():
            return self.prior.encode(self.operator.naive(y).to(y.dtype))

    def to(self, device):
        self.operator.to(device)
        return self

    def describe(self) -> dict:
        return self.operator.describe()


# -- building -----------------------------------------------------------------------------------------
def _plain(node) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else dict(node)


def check_folder(folder, embedding_cache=None) -> None:
    """Every file prior=sd2_base needs (the text encoder's only while the empty-prompt embedding is not
    cached): MissingFileError naming the first missing one, where to get it and the override."""
    root = Path(absolute_path(folder)) if folder else None
    if root is None or not root.is_dir():
        raise MissingFileError(root, "Stable Diffusion 2-base folder (prior=sd2_base)", FOLDER_WHERE, FOLDER_OVERRIDE)
    cached = embedding_cache and Path(absolute_path(embedding_cache)).is_file()
    for rel in NETWORK_FILES + (() if cached else TEXT_FILES):
        if not (root / rel).is_file():
            raise MissingFileError(root / rel, f"file '{rel}' of the Stable Diffusion 2-base folder (prior=sd2_base)",
                                   FOLDER_WHERE, FOLDER_OVERRIDE)
    if not cached and not any(all((root / rel).is_file() for rel in vocab) for vocab in TOKENIZER_VOCABS):
        rel = TOKENIZER_VOCABS[0][0]
        raise MissingFileError(root / rel, f"file '{rel}' (with merges.txt, or a tokenizer.json) of the Stable "
                               "Diffusion 2-base folder (prior=sd2_base)", FOLDER_WHERE, FOLDER_OVERRIDE)


def empty_prompt_embedding(text_encoder, input_ids: torch.Tensor) -> torch.Tensor:
    """The text encoder's last hidden state for the tokenised empty prompt (what the SD pipeline feeds
    the UNet for prompt "" ), shape (1, L, D)."""
    with torch.no_grad():
        return text_encoder(input_ids).last_hidden_state.float()


def build_random(name: str, seed: int, unet: dict, vae: dict, text_encoder: dict, betas: np.ndarray,
                 prediction_type: str, image_size: int) -> LatentPrior:
    """prior.source=random: networks of the configured (small) sizes with seeded random weights; the
    empty prompt is [bos, eos, eos, ...] (no tokenizer files needed)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text_cfg = _plain(text_encoder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        try:
            unet = UNet2DConditionModel(**_plain(unet))
            vae = AutoencoderKL(**_plain(vae))
            text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"prior={name}: the unet/vae/text_encoder configs do not build: {err}") from err
    length = text_cfg.get("max_position_embeddings", 77)
    ids = torch.full((1, length), int(text_cfg["eos_token_id"]), dtype=torch.long)
    ids[0, 0] = int(text_cfg["bos_token_id"])
    embedding = empty_prompt_embedding(text_encoder, ids)
    return LatentPrior(unet, vae, embedding, betas, prediction_type, image_size)


def build_from_folder(name: str, path, embedding_cache, schedule: dict, prediction_type: str | None,
                      image_size: int) -> LatentPrior:
    """prior.source=folder: the diffusers folder at path (local files only, safetensors); its
    scheduler_config.json overrides the schedule's keys."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    cache = absolute_path(embedding_cache) if embedding_cache else None
    check_folder(path, cache)
    root = Path(absolute_path(path))
    scheduler = json.loads((root / "scheduler/scheduler_config.json").read_text())
    # local files only: never downloads (a missing file was named by check_folder above)
    unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", local_files_only=True, use_safetensors=True)
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae", local_files_only=True, use_safetensors=True)
    embedding = load_or_make_embedding(root, cache)
    prediction = scheduler.get("prediction_type", "epsilon")
    if prediction_type and prediction_type != prediction:
        raise ConfigError(f"prior={name}: prediction_type '{prediction_type}' but the folder's scheduler "
                          f"says '{prediction}'")
    return LatentPrior(unet, vae, embedding, _betas(schedule | scheduler), prediction, image_size)


def _betas(s: dict) -> np.ndarray:
    return make_betas(s["beta_schedule"], int(s["num_train_timesteps"]), float(s["beta_start"]), float(s["beta_end"]))


def load_or_make_embedding(root: Path, cache: str | None) -> torch.Tensor:
    """The cached empty-prompt embedding, or the text encoder's (then cached, if a cache path is set)."""
    from safetensors.torch import load_file, save_file

    if cache and Path(cache).is_file():
        return load_file(cache)["empty_prompt"]
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", local_files_only=True,
                                                 use_safetensors=True)
    ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    embedding = empty_prompt_embedding(text_encoder, ids)
    if cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{cache}.tmp"
        save_file({"empty_prompt": embedding.contiguous()}, tmp)
        Path(tmp).replace(cache)
        log.info("cached the empty-prompt embedding in %s", cache)
    return embedding


def latent_prior(source: str = "folder", path: str | None = None, embedding_cache: str | None = None, seed: int = 0,
                 image_size: int = 512, noise_schedule: str = "scaled_linear", beta_start: float = 0.00085,
                 beta_end: float = 0.012, diffusion_steps: int = 1000, prediction_type: str | None = None,
                 unet: dict | None = None, vae: dict | None = None, text_encoder: dict | None = None,
                 name: str = "latent") -> LatentPrior:
    """A latent prior (``kind: latent``; conf/prior/sd2_base.yaml, sd2_tiny.yaml), frozen. source=folder: a
    local diffusers folder at ``path`` (the folder's scheduler_config.json wins over the schedule keys;
    prediction_type null = the folder's); source=random: seeded random networks from the diffusers/transformers
    kwargs ``unet``, ``vae``, ``text_encoder`` (prediction_type default epsilon)."""
    schedule = {"beta_schedule": noise_schedule, "num_train_timesteps": diffusion_steps, "beta_start": beta_start,
                "beta_end": beta_end}
    if source == "random":
        if unet is None or vae is None or text_encoder is None:
            raise ConfigError(f"prior={name}: source=random needs unet, vae and text_encoder configs")
        return build_random(name, seed, unet, vae, text_encoder, _betas(schedule), prediction_type or "epsilon",
                            image_size)
    if source == "folder":
        return build_from_folder(name, path, embedding_cache, schedule, prediction_type, image_size)
    raise ConfigError(f"prior={name}: source must be 'random' or 'folder', got '{source}'")


# -- the conditional estimator (Xu et al. 2025, method 2, as the authors trained it on SD) --------------
def build_controlnet(prior: LatentPrior):
    """A diffusers ControlNetModel copied from the prior's UNet (``ControlNetModel.from_unet``): the trainable
    encoder copy starts from the prior's weights and its zero convolutions from 0, so at initialisation the
    conditional prior is the prior. The condition is a 3-channel image in [-1, 1] (operator.naive(y)); the
    conditioning embedding downsamples it by the VAE's factor."""
    from diffusers import ControlNetModel

    levels = prior.downscale.bit_length() - 1  # stride-2 convolutions: image size -> latent size
    widths = tuple(min(16 * 2**k, 256) for k in range(levels + 1))
    return ControlNetModel.from_unet(prior.unet, conditioning_channels=3, conditioning_embedding_out_channels=widths)


#: the card train_adapter writes into a ControlNet folder (task, operator, training)
CARD = "dps_map_card.json"


def controlnet_folder(path) -> Path | None:
    """The ControlNet folder `path` names (a path ending in .pt, as paths.adapter's default, also finds the
    folder without the suffix), or None if there is none."""
    path = Path(absolute_path(path))
    for folder in (path, path.with_suffix("")):
        if (folder / "config.json").is_file():
            return folder
    return None


def load_controlnet(path):
    """(ControlNet, its card or {}) from a folder written by ``save_pretrained`` (local files, safetensors)."""
    from diffusers import ControlNetModel

    folder = controlnet_folder(path)
    if folder is None:
        raise MissingFileError(Path(absolute_path(path)) / "config.json", "ControlNet folder of the latent adapter "
                               "samplers", "`python -m dps_map.train_adapter prior=<latent prior> ...` (docs/latent.md)", "prior.adapter=/path/to/controlnet_folder")
    card = json.loads((folder / CARD).read_text()) if (folder / CARD).is_file() else {}
    model = ControlNetModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    return model.eval().requires_grad_(False), card


class LatentControlNetPrior(Prior):
    """eps(z_t, t, y): the frozen latent prior's UNet with the ControlNet's residuals, conditioned on the
    measurement mapped back to the image, ``operator.naive(y)`` (bicubic-upsampled y for SR, the blurred
    image for deblurring). Same contract as any prior, so the adapter samplers run on it unchanged."""

    kind = "latent"
    needs_measurement = True

    def __init__(self, prior: LatentPrior, controlnet, hint: torch.Tensor | None = None, adapter_path=None,
                 trained_operator: dict | None = None):
        super().__init__()
        self.prior, self.controlnet = prior, controlnet  # frozen by load_controlnet; trained by dps_map.training.latent_controlnet
        self.hint = hint
        self.adapter_path, self.trained_operator = adapter_path, trained_operator
        self.betas, self.learn_sigma = prior.betas, False
        self.image_size = prior.image_size

    @property
    def sample_shape(self):
        return self.prior.sample_shape

    def condition(self, operator, y: torch.Tensor) -> "LatentControlNetPrior":
        """The same prior bound to measurement y; refused for an operator the ControlNet was not trained for."""
        from ..adapters.adm_controlnet import check_trained_operator

        check_trained_operator(self.trained_operator, operator, self.adapter_path)
        pixel = getattr(operator, "operator", operator)  # the pixel operator inside a DecodedOperator
        with torch.no_grad():
            hint = pixel.naive(y).clamp(-1, 1)
        return LatentControlNetPrior(self.prior, self.controlnet, hint, self.adapter_path, self.trained_operator)

    def predict(self, z, t):
        if self.hint is None:
            raise ConfigError("a conditional prior needs a measurement: call condition(operator, y) first")
        hint = self.hint.to(z.device, z.dtype)
        if hint.shape[0] != z.shape[0]:
            hint = hint.expand(z.shape[0], *hint.shape[1:])
        context = self.prior.text_embedding.to(z.dtype).expand(z.shape[0], -1, -1)
        with self.prior.autocast(z.device):  # the prior's precision applies to both networks
            down, mid = self.controlnet(z, t, encoder_hidden_states=context, controlnet_cond=hint, return_dict=False)
            out = self.prior.unet(z, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                                  mid_block_additional_residual=mid).sample.to(z.dtype)
        if self.prior.prediction_type == "v_prediction":
            out = eps_from_v(z, out, self.prior.abar[t].to(z.dtype).reshape(-1, 1, 1, 1))
        return out, None

    def decode(self, z):
        return self.prior.decode(z)

    def sampling_operator(self, operator):
        return self.prior.sampling_operator(operator)
