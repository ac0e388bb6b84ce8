"""DOODL nodes: pixel losses (one socket type, combinable with weights) and the optimiser of the initial noise through
the whole EDICT chain."""
from __future__ import annotations

import comfy.model_management
from comfy_api.latest import io

from .. import artifacts
from ..adapters.clip import ComfyCLIPVision, load_local_clip
from ..adapters.doodl import DOODLSettings, OneStepGuidanceSampler, optimize
from ..adapters.run import grad_context
from ..losses import classifiers
from ..losses.clip import plain_words
from ..losses.pixel import AestheticLoss, ClassifierLoss, CLIPLoss, WeightedSum
from ..optim.doodl import BACKPROP_MODES, DOODLConfig
from ..samplers import edict
from .common import CATEGORY, display, node_id
from .folders import AESTHETIC_FOLDER, CLASSIFIER_FOLDER, clip_folder, clip_folder_names, file_names, file_path
from .sockets import LossHistory, PixelLoss

SUBCATEGORY = f"{CATEGORY}/doodl"


def _crop_inputs(crop_size: int | None = None):
    inputs = [
        io.Int.Input("crops", default=16, min=0, max=64, tooltip=(
            "Random crops per image (DOODL's multi-crop, against adversarial pixels); 0 = the whole image.")),
        io.Float.Input("crop_power", default=0.3, min=0.01, max=2.0, step=0.01, tooltip=(
            "Crop sizes u^power of the range: below 1 favours large crops (paper 0.3).")),
    ]
    if crop_size is not None:
        inputs.append(io.Int.Input("input_size", default=crop_size, min=8, max=1024, tooltip=(
            "The classifier's input size: crops are resized to it.")))
    return inputs


def _clip(name: str, who: str):
    return load_local_clip(clip_folder(name, who), who)


class DOODLCLIPLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("DOODLCLIPLoss"),
            display_name=display("DOODL CLIP Loss"),
            category=SUBCATEGORY,
            description=(
                "Spherical distance 2·arcsin(‖û − v̂‖/2)² between the CLIP embedding of the generated image's crops "
                "and a target: a text, or the mean embedding of reference images (personalisation). CLIP is a "
                "transformers folder in models/invedit_clip/ (never downloaded)."),
            inputs=[
                io.Combo.Input("clip_name", options=clip_folder_names(), tooltip=(
                    "A transformers CLIPModel folder (config.json, model.safetensors, tokenizer files).")),
                io.String.Input("text", default="", tooltip="Target text (ignored when images are connected)."),
                io.Float.Input("weight", default=1.0, min=0.0, max=1000.0, step=0.01, tooltip=(
                    "λ: the loss's weight (paper 0.1 with its clip; the official demo uses 1).")),
                io.Combo.Input("reduction", options=["min", "mean"], default="min", tooltip=(
                    "Over the crops: min (the official code) or mean (smoother gradients).")),
                *_crop_inputs(),
                io.Image.Input("images", optional=True, tooltip="Reference images: their mean embedding is the target."),
                io.ClipVision.Input("clip_vision", optional=True, tooltip=(
                    "Use a stock CLIP_VISION (CLIPVisionLoader) instead of clip_name, for image targets (it has no "
                    "text tower).")),
            ],
            outputs=[PixelLoss.Output(display_name="loss")],
        )

    @classmethod
    def execute(cls, clip_name, text, weight, reduction, crops, crop_power, images=None,
                clip_vision=None) -> io.NodeOutput:
        who = display("DOODL CLIP Loss")
        plain_words(text, who, "text")
        if images is None and not text.strip():
            raise ValueError(f"{who}: give a target text or connect reference images.")
        if clip_vision is not None and images is None:
            raise ValueError(f"{who}: a CLIP_VISION has no text tower: connect reference images, or disconnect "
                             f"clip_vision and use clip_name for a text target.")
        with grad_context():
            if clip_vision is not None:
                clip = ComfyCLIPVision(clip_vision)
            else:
                clip = _clip(clip_name, who)
            kw = dict(weight=weight, crops=crops, crop_power=crop_power, reduction=reduction)
            if images is not None:
                loss = CLIPLoss.from_images(clip, images.clone().movedim(-1, 1)[:, :3].to(clip.device), **kw)
            else:
                loss = CLIPLoss.from_text(clip, text, **kw)
        return io.NodeOutput(loss)


class DOODLClassifierLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("DOODLClassifierLoss"),
            display_name=display("DOODL Classifier Loss"),
            category=SUBCATEGORY,
            description=(
                "Cross-entropy of an image classifier to a target class on the generated image's crops (or minus "
                "its logit). The classifier is a safetensors file in models/invedit_classifiers/ (or the older "
                "models/classifiers/) of a declared architecture "
                "(small_cnn, resnet18, resnet50); classes come from its 'classes' metadata or are numbered."),
            inputs=[
                io.Combo.Input("classifier", options=file_names(CLASSIFIER_FOLDER), tooltip=(
                    "A .safetensors state dict (pickles are refused).")),
                io.Combo.Input("architecture", options=list(classifiers.ARCHITECTURES), default="small_cnn",
                               tooltip="The network the weights belong to."),
                io.String.Input("target", default="0", tooltip="The class to reach: its name or index."),
                io.Int.Input("num_classes", default=0, min=0, max=100000, tooltip=(
                    "Only for files without 'classes' metadata.")),
                io.Combo.Input("normalisation", options=list(classifiers.NORMALISATIONS), default="none", tooltip=(
                    "What the classifier expects after [0, 1] pixels: none (small_cnn), imagenet, clip, [-1, 1].")),
                io.Combo.Input("mode", options=["cross_entropy", "logit"], default="cross_entropy",
                               tooltip="cross_entropy to the target, or minus the target's logit."),
                io.Float.Input("weight", default=1.0, min=0.0, max=1000.0, step=0.01, tooltip=(
                    "λ (paper 0.05 for fine-grained classes with its gradient clip).")),
                *_crop_inputs(crop_size=64),
            ],
            outputs=[PixelLoss.Output(display_name="loss")],
        )

    @classmethod
    def execute(cls, classifier, architecture, target, num_classes, normalisation, mode, weight, crops, crop_power,
                input_size) -> io.NodeOutput:
        who = display("DOODL Classifier Loss")
        with grad_context():
            model, classes = artifacts.classifier.load_classifier(file_path(CLASSIFIER_FOLDER, classifier),
                                                                  architecture, num_classes or None, who)
            model = model.to(comfy.model_management.get_torch_device())
        try:
            index = classifiers.class_index(classes, target)
        except ValueError as e:
            raise ValueError(f"{who}: {e}") from None
        norm = classifiers.NORMALISATIONS[normalisation] or (None, None)
        return io.NodeOutput(ClassifierLoss(model, index, *norm, mode=mode, weight=weight, crops=crops,
                                            crop_power=crop_power, crop_size=input_size))


class DOODLAestheticLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("DOODLAestheticLoss"),
            display_name=display("DOODL Aesthetic Loss"),
            category=SUBCATEGORY,
            description=(
                "A linear aesthetic head on L2-normalised CLIP image embeddings (the LAION aesthetic predictor v1 "
                "form): |score − target|, or −score with target 0. The head is a safetensors file with 'weight' "
                "[1, D] and 'bias' [1] in models/invedit_aesthetic/ (or the older models/aesthetic/), made for the "
                "chosen CLIP."),
            inputs=[
                io.Combo.Input("clip_name", options=clip_folder_names(), tooltip="The CLIP the head was made for."),
                io.Combo.Input("head", options=file_names(AESTHETIC_FOLDER),
                               tooltip="weight [1, D] and bias [1] as safetensors."),
                io.Float.Input("target", default=10.0, min=0.0, max=10.0, step=0.1, tooltip=(
                    "Score to reach (10 = most aesthetic, 1 = least); 0 maximises.")),
                io.Float.Input("weight", default=1.0, min=0.0, max=1000.0, step=0.01, tooltip="λ (paper 1)."),
                *_crop_inputs(),
            ],
            outputs=[PixelLoss.Output(display_name="loss")],
        )

    @classmethod
    def execute(cls, clip_name, head, target, weight, crops, crop_power) -> io.NodeOutput:
        who = display("DOODL Aesthetic Loss")
        with grad_context():
            state, _ = artifacts.load(file_path(AESTHETIC_FOLDER, head), "aesthetic", who)
            try:
                loss = AestheticLoss(_clip(clip_name, who), state["weight"], state["bias"], target, weight=weight,
                                     crops=crops, crop_power=crop_power)
            except ValueError as e:
                raise ValueError(e if str(e).startswith(who) else f"{who}: {head} with {clip_name}: {e}") from None
        return io.NodeOutput(loss)


class DOODLLossCombine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("DOODLLossCombine"),
            display_name=display("DOODL Combine Losses"),
            category=SUBCATEGORY,
            description=("weight_a·a + weight_b·b of two DOODL losses (each keeps its own weight and crops); chain the "
                         "node for more than two."),
            inputs=[PixelLoss.Input("a", tooltip="First loss."),
                    io.Float.Input("weight_a", default=1.0, min=0.0, max=1000.0, step=0.01, tooltip="Its weight."),
                    PixelLoss.Input("b", tooltip="Second loss."),
                    io.Float.Input("weight_b", default=1.0, min=0.0, max=1000.0, step=0.01, tooltip="Its weight.")],
            outputs=[PixelLoss.Output(display_name="loss")],
        )

    @classmethod
    def execute(cls, a, weight_a, b, weight_b) -> io.NodeOutput:
        return io.NodeOutput(WeightedSum([(a, weight_a), (b, weight_b)]))


class DOODLOptimize(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("DOODLOptimize"),
            display_name=display("DOODL Optimize"),
            category=SUBCATEGORY,
            description=(
                "Optimises the initial noise of an EDICT generation so that the decoded image lowers the loss "
                "(DOODL, Wallace et al. ICCV 2023): each iteration runs the whole EDICT chain, decodes x_0 and y_0, "
                "and back-propagates the loss through every step with memory independent of the step count "
                "(the chain is inverted step by step instead of stored). Generation: from an Empty Latent Image "
                "and a seed (tied, renormalised latents). Editing: from EDICT Invert's pair (untied, not "
                "renormalised; the pair's sigmas, mix_p and leapfrog are used). Each iteration costs about 3.2× an "
                "EDICT generation (measured by bench/bench_doodl.py)."),
            inputs=[
                io.Model.Input("model", tooltip="SD1.x/SD2.x/SDXL, or a flow model (SD3, Flux: the flow EDICT chain)."),
                io.Conditioning.Input("positive", tooltip="The prompt."),
                io.Conditioning.Input("negative", tooltip="Negative prompt (usually empty)."),
                io.Vae.Input("vae", tooltip="Decodes x_0 and y_0 (gradients pass through it)."),
                PixelLoss.Input("loss", tooltip="From a DOODL loss node (or Combine Losses)."),
                io.Latent.Input("latent", tooltip="Empty Latent Image (generation) or EDICT Invert's pair (editing)."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Initial noise, crops and perturbations."),
                io.Int.Input("steps", default=50, min=1, max=200, tooltip=(
                    "EDICT steps for generation (official schedule 980…0; on a flow model the simple scheduler with "
                    "the model's shift); a pair brings its own.")),
                io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=(
                    "Guidance (paper 7.5; use the inversion's cfg for an EDICT pair).")),
                io.Float.Input("mix_p", default=edict.DEFAULT_P, min=0.5, max=1.0, step=0.005, tooltip=(
                    "EDICT mixing weight (must equal the pair's).")),
                io.Int.Input("iterations", default=20, min=0, max=1000, tooltip=(
                    "Gradient steps on the noise (paper 10–50; expect 10+ before a visible change).")),
                io.Float.Input("lr", default=1.0, min=0.0, max=1e6, step=0.1, tooltip=(
                    "Multiplies the gradient before clipping (the loss weight plays the same role).")),
                io.Float.Input("grad_clip", default=1e-3, min=1e-6, max=1.0, step=1e-4, tooltip=(
                    "Element-wise clip of each step (paper 1e-3).")),
                io.Float.Input("momentum", default=0.9, min=0.0, max=0.999, step=0.01, tooltip="Paper 0.9."),
                io.Float.Input("perturb_std", default=1e-4, min=0.0, max=0.1, step=1e-4, tooltip=(
                    "Std of the Gaussian kick added each iteration (paper 1e-4).")),
                io.Combo.Input("keep", options=["last", "best"], default="last", tooltip=(
                    "Return the last iterate or the one with the lowest loss.")),
                io.Combo.Input("backprop", options=list(BACKPROP_MODES), default="reversible", tooltip=(
                    "reversible: memory independent of the steps (inputs rebuilt by the exact inverse); "
                    "checkpoint: keeps 2 latents per step, gradient bit-identical to naive autograd; naive: plain "
                    "autograd through every step (memory grows with the steps; for comparison).")),
                io.Combo.Input("pair_steps", options=["shared", "separate"], default="shared", tooltip=(
                    "EDICT pairs only: move x_T and y_T by the same step, keeping their inverted difference "
                    "(shared), or each by its own gradient (separate, the official code; fragile).")),
                io.Boolean.Input("grad_checkpointing", default=False, optional=True, tooltip=(
                    "Recompute the U-Net's and the VAE decoder's blocks in the backward passes instead of keeping "
                    "their activations: the same result, more time, a fraction of the memory (see the help page's "
                    "figures; for SDXL at 1024² on 24 GB). U-Nets and SD3 only: the Flux-family blocks add in place "
                    "onto their inputs, and are refused.")),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="x_0 of the chosen iterate (VAE Decode it)."),
                     io.Latent.Output(display_name="pair", tooltip=(
                         "The optimised (x_T, y_T) as an EDICT pair: EDICT Regenerate reproduces the result.")),
                     LossHistory.Output(display_name="loss_history", tooltip=(
                         "The loss of every iteration (also drawn live on this node); Loss Chart renders it."))],
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, loss, latent, seed, steps, cfg, mix_p, iterations, lr,
                grad_clip, momentum, perturb_std, keep, backprop, pair_steps="shared",
                grad_checkpointing=False) -> io.NodeOutput:
        config = DOODLConfig(iterations=iterations, lr=lr, grad_clip=grad_clip, momentum=momentum,
                             perturb_std=perturb_std, keep=keep)
        run = optimize(model, positive, negative, vae, loss, latent,
                       DOODLSettings(seed, steps, cfg, mix_p, config, backprop, pair_steps, grad_checkpointing),
                       display("DOODL Optimize"))
        return io.NodeOutput(run.latent, run.pair, run.live.history, ui=run.live.ui(run.summary()))


class DOODLGuidanceSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("DOODLGuidanceSampler"),
            display_name=display("One-Step Guidance Sampler"),
            category=SUBCATEGORY,
            description=(
                "The baseline DOODL is compared with (the official code's one-step classifier guidance), as a SAMPLER "
                "for SamplerCustom / SamplerCustomAdvanced: DDIM whose step is pushed down the gradient of a DOODL "
                "loss at every step. The loss scores fac·x̂0_u + (1 − fac)·z, x̂0_u the one-step estimate of the "
                "negative (unconditional) prediction, fac = sqrt(1 − ᾱ), and the gradient goes through that "
                "prediction only; the guider's CFG prediction takes the step: D̃ = D − scale·σ²·∇_x L (ε̃ = ε̂ + "
                "scale·sqrt(1 − ᾱ)·∇_z L). VP models (SD1.x/SD2.x/SDXL) only."),
            inputs=[
                io.Vae.Input("vae", tooltip="Decodes fac·x̂0_u + (1 − fac)·z for the loss."),
                PixelLoss.Input("loss", tooltip="From a DOODL loss node."),
                io.Float.Input("scale", default=30.0, min=0.0, max=10000.0, step=0.5, tooltip=(
                    "λ, the official grad_scale (paper: 30 for CLIP, 5 for fine-grained classifiers); 0 = plain "
                    "DDIM.")),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, tooltip="The loss's random crops."),
            ],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, vae, loss, scale, seed) -> io.NodeOutput:
        return io.NodeOutput(OneStepGuidanceSampler(vae, loss, scale, seed))


NODES = [DOODLCLIPLoss, DOODLClassifierLoss, DOODLAestheticLoss, DOODLLossCombine, DOODLOptimize, DOODLGuidanceSampler]
