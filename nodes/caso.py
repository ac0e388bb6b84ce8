"""CASO nodes: image classifiers, train class embeddings from a classifier, save them where the stock text encoder
finds them (``embedding:<name>``), load, encode, the windowed guidance patch, and the edit."""
from __future__ import annotations

import json
import logging
import re

from comfy_api.latest import io, ui

from .. import artifacts
from ..adapters import caso as adapter
from ..adapters.checks import checked_latent, refuse_noise_mask, require_latent_channels
from ..adapters.clip import load_local_clip
from ..adapters.progress import LiveLoss
from ..adapters.run import grad_context
from ..artifacts.caso import from_tensors, to_tensors
from ..errors import quote
from ..losses import classifiers
from ..losses.clip import plain_words
from ..optim import caso
from .common import CATEGORY, display, node_id
from .folders import CLASSIFIER_FOLDER, clip_folder, clip_folder_names, file_names, file_path, save_set
from .sockets import CASOEmbedding, ImageClassifier, LossHistory

log = logging.getLogger(__name__)
SUBCATEGORY = f"{CATEGORY}/caso"
EMBEDDINGS = "embeddings"  # ComfyUI's own folder: the stock CLIPTextEncode reads embedding:<name> from it


class ClassifierLoad(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("ClassifierLoad"),
            display_name=display("Image Classifier"),
            category=SUBCATEGORY,
            description=(f"An image classifier for CASO: a safetensors state dict in models/{CLASSIFIER_FOLDER}/ of a "
                         f"declared architecture (the file only fills its parameters; pickles are refused); classes "
                         f"from its 'classes' metadata or numbered."),
            inputs=[io.Combo.Input("classifier", options=file_names(CLASSIFIER_FOLDER), tooltip="A .safetensors file."),
                    io.Combo.Input("architecture", options=list(classifiers.ARCHITECTURES), default="small_cnn",
                                   tooltip="The network the weights belong to."),
                    io.Int.Input("num_classes", default=0, min=0, max=100000, tooltip=(
                        "Only for files without 'classes' metadata.")),
                    io.Combo.Input("normalisation", options=list(classifiers.NORMALISATIONS), default="none",
                                   tooltip="What the network expects after [0, 1] pixels.")],
            outputs=[ImageClassifier.Output(display_name="classifier")],
        )

    @classmethod
    def execute(cls, classifier, architecture, num_classes, normalisation) -> io.NodeOutput:
        who = display("Image Classifier")
        with grad_context():
            model, names = artifacts.classifier.load_classifier(file_path(CLASSIFIER_FOLDER, classifier),
                                                                architecture, num_classes or None, who)
        import comfy.model_management
        model = model.to(comfy.model_management.get_torch_device())
        digest = artifacts.caso.fingerprint(next(model.parameters()))
        return io.NodeOutput(classifiers.ImageClassifier.network(model, names, normalisation,
                                                                 f"{classifier} ({architecture}, {digest})"))


class CLIPZeroShotClassifier(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("CLIPZeroShotClassifier"),
            display_name=display("CLIP Zero-shot Classifier"),
            category=SUBCATEGORY,
            description=("An image classifier from a local CLIP (models/invedit_clip/) and one prompt per class: "
                         "logits = 100·cos(image, prompt). Also a second judge of an edit trained with another "
                         "classifier."),
            inputs=[io.Combo.Input("clip_name", options=clip_folder_names(), tooltip="A transformers CLIP folder."),
                    io.String.Input("prompts", multiline=True, default="a red circle\na blue circle", tooltip=(
                        "One prompt per class, one per line.")),
                    io.String.Input("class_names", default="", tooltip=(
                        "Comma-separated names (empty: the prompts)."))],
            outputs=[ImageClassifier.Output(display_name="classifier")],
        )

    @classmethod
    def execute(cls, clip_name, prompts, class_names) -> io.NodeOutput:
        who = display("CLIP Zero-shot Classifier")
        plain_words(prompts, who, "prompts")
        lines = [p.strip() for p in prompts.splitlines() if p.strip()]
        names = [n.strip() for n in class_names.split(",") if n.strip()] or lines
        if len(lines) < 2 or len(names) != len(lines):
            raise ValueError(f"{who}: give one prompt per line for at least two classes, and as many class names "
                             f"(got {len(lines)} prompts, {len(names)} names)")
        with grad_context():  # the prompts' features too: made under ComfyUI's inference mode, a gradient node
            clip = load_local_clip(clip_folder(clip_name, who), who)  # (CASO Train, DOODL) could not backprop
            classifier = classifiers.ImageClassifier.zero_shot(clip, lines, names, description=clip_name)
        return io.NodeOutput(classifier)


class CLIPVisionLinearProbe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("CLIPVisionLinearProbe"),
            display_name=display("CLIP Vision Linear Probe"),
            category=SUBCATEGORY,
            description=("An image classifier from a stock CLIP_VISION (Load CLIP Vision) and a few labelled images: a "
                         "linear head W·E(image) + b fitted on the tower's normalised image embedding (logistic "
                         "regression, full batch, deterministic); differentiable through the tower, for CASO Train "
                         "or as a judge. The tower's weights are not changed."),
            inputs=[io.ClipVision.Input("clip_vision", tooltip="A stock CLIP vision model (CLIP towers; not SigLIP)."),
                    io.Image.Input("images", tooltip="Labelled examples, one label each (a batch)."),
                    io.String.Input("labels", multiline=True, default="", tooltip=(
                        "One class name per image, in the batch's order, separated by commas or new lines.")),
                    io.String.Input("class_names", default="", tooltip=(
                        "The classes' order, comma-separated (empty: in order of first appearance).")),
                    io.Int.Input("steps", default=300, min=1, max=10000, tooltip="Adam steps on the head."),
                    io.Float.Input("weight_decay", default=1e-3, min=0.0, max=1.0, step=1e-4,
                                   tooltip="L2 penalty on W (½·wd·||W||²).")],
            outputs=[ImageClassifier.Output(display_name="classifier")],
        )

    @classmethod
    def execute(cls, clip_vision, images, labels, class_names, steps, weight_decay) -> io.NodeOutput:
        who = display("CLIP Vision Linear Probe")
        given = [t.strip() for t in re.split(r"[,\n]", labels) if t.strip()]
        names = [n.strip() for n in class_names.split(",") if n.strip()] or list(dict.fromkeys(given))
        if len(given) != images.shape[0]:
            raise ValueError(f"{who}: {images.shape[0]} images and {len(given)} labels; give one label per image")
        unknown = sorted(set(given) - set(names))
        if unknown or len(names) < 2:
            raise ValueError(f"{who}: labels {unknown} are not in class_names {names}" if unknown else
                             f"{who}: the labels name {len(names)} class; a classifier needs at least two")
        clf, acc, dim = adapter.linear_probe(clip_vision, images, [names.index(t) for t in given], names, steps,
                                             weight_decay, who)
        text = (f"linear probe on {dim}-d CLIP vision features: {len(names)} classes, training accuracy "
                f"{100 * acc:.0f} % on {len(given)} images")
        clf.description = text
        return io.NodeOutput(clf, ui=ui.PreviewText(text))


class CASOTrain(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("CASOTrain"),
            display_name=display("CASO Train Embeddings"),
            category=SUBCATEGORY,
            description=(
                "Learns one embedding per class of the classifier (CASO, Chang et al. 2025): an image's latent is "
                "noised to one level L, one guided model call with the class embedding as the positive prompt (the "
                "empty prompt as negative) gives the clean estimate, the VAE decodes it and the classifier's loss "
                "to the class is minimised over the drawn class's embedding only (AdamW, one state per class: a "
                "class not drawn does not move, as the official trainer). The images need no labels; connect them "
                "beside their latent for the official flip of the pixels before the VAE. Save the "
                "result to use a class as embedding:<name> in any prompt. Note: the first run turns the loaded "
                "U-Net's, VAE's and text encoder's inference-mode weights into ordinary tensors (same values)."),
            inputs=[
                io.Model.Input("model", tooltip="SD1.x/SD2.x/SDXL (frozen)."),
                io.Clip.Input("clip", tooltip="Its text encoder (frozen; the embedding lives in its token space)."),
                io.Vae.Input("vae", tooltip="Decodes the estimate for the classifier (with gradients)."),
                ImageClassifier.Input("classifier", tooltip="Image Classifier or CLIP Zero-shot Classifier."),
                io.Latent.Input("latent", tooltip=(
                    "VAE Encode of the unlabeled training images (a batch). Connect the images too for the official "
                    "flip (of the pixels before the VAE); without them hflip mirrors the latent.")),
                io.String.Input("attribute", default="colour", tooltip="What the classes are of (file names, metadata)."),
                io.Int.Input("steps", default=200, min=1, max=100000, tooltip=(
                    "Optimiser steps (official: about 2000, 20 epochs of 200 images at batch 2).")),
                io.Int.Input("batch_size", default=2, min=1, max=64, tooltip="Images per step (official 2)."),
                io.Float.Input("scale", default=10.0, min=-30.0, max=30.0, step=0.1, tooltip=(
                    "λ of the training step's guidance (official 10).")),
                io.Float.Input("level", default=0.4, min=0.02, max=0.98, step=0.02, tooltip=(
                    "L as a fraction of the 50 DDIM steps (0.4: t 401, official; 0.3 for faces).")),
                io.Float.Input("lr", default=0.02, min=1e-5, max=1.0, step=0.001, tooltip=(
                    "AdamW learning rate (0.02 on the vector = the official 0.01 on its two-Linear form).")),
                io.Float.Input("weight_decay", default=0.005, min=0.0, max=1.0, step=0.001, tooltip=(
                    "AdamW weight decay (0.005 on the vector = the official 0.01 on its two-Linear form).")),
                io.Float.Input("gamma", default=0.0, min=0.0, max=1000.0, step=0.1, tooltip=(
                    "Weight of the latent reconstruction term (official 0).")),
                io.Int.Input("n_tokens", default=1, min=1, max=8, tooltip="Tokens per class (official 1)."),
                io.Combo.Input("init", options=list(adapter.INITS), default="repo_uniform", tooltip=(
                    "repo_uniform: the official W·1 + b with U(−1, 1) entries; zeros.")),
                io.Boolean.Input("hflip", default=True, tooltip=(
                    "Flip each drawn image left-right with p 0.5 (official): its pixels before the VAE when images "
                    "is connected (as the official code), else its latent.")),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, tooltip=(
                    "Every draw: classes, images, flips, noise, initialisation.")),
                io.Combo.Input("classifier_aug", options=list(caso.CLASSIFIER_AUGS), default="none", optional=True,
                               tooltip="flip_crop: the classifier sees a random flip and 7/8 crop of each estimate."),
                io.Combo.Input("dtype", options=list(caso.DTYPES), default="fp32", optional=True, tooltip=(
                    "bf16: the U-Net, VAE and classifier calls under bf16 autocast (less memory on a GPU; the "
                    "embedding and optimiser stay fp32).")),
                io.Boolean.Input("grad_checkpointing", default=False, optional=True, tooltip=(
                    "Recompute the text encoder, the U-Net call, the decode and the classifier in the backward pass, "
                    "one block of the U-Net and of the decoder at a time, instead of keeping their activations (less "
                    "memory, about one more forward of time; the same gradients; the help page has the figures).")),
                io.Image.Input("images", optional=True, tooltip=(
                    "The images the latent was encoded from: the node encodes their mirror images with the VAE once, "
                    "and a sample hflip flips takes its mirror's latent (the official flip of the pixels).")),
            ],
            outputs=[CASOEmbedding.Output(display_name="embeddings", tooltip="One per class of the classifier."),
                     LossHistory.Output(display_name="loss_history", tooltip="The class loss at every step.")],
        )

    @classmethod
    def execute(cls, model, clip, vae, classifier, latent, attribute, steps, batch_size, scale, level, lr,
                weight_decay, gamma, n_tokens, init, hflip, seed, classifier_aug="none", dtype="fp32",
                grad_checkpointing=False, images=None) -> io.NodeOutput:
        who = display("CASO Train Embeddings")
        # the training images' latents: another channel count is refused even when empty (checked_latent gives an
        # all-zero latent the model's channels, as the stock samplers do, which for training data hides the mistake)
        require_latent_channels(latent["samples"], model, who)
        samples = checked_latent(model, latent, who)
        refuse_noise_mask(latent, who)
        mirrored = adapter.mirror_latents(vae, images, samples, who) if images is not None and hflip else None
        config = caso.TrainConfig(steps=steps, batch_size=batch_size, scale=scale, lr=lr, weight_decay=weight_decay,
                                  gamma=gamma, hflip=hflip, seed=seed, dtype=dtype, checkpointing=grad_checkpointing,
                                  classifier_aug=classifier_aug)
        settings = adapter.CASOSettings(n_tokens=n_tokens, init=init, level=level, config=config)
        live = LiveLoss("CASO training", "class loss")
        embs, res = adapter.train(model, clip, vae, classifier, samples, settings, who, live, mirrored=mirrored)
        meta = {"attribute": attribute, "class_names": json.dumps(classifier.class_names),
                "classifier": classifier.description, "family": type(model.model.model_config).__name__,
                "train": json.dumps({"steps": steps, "batch_size": batch_size, "scale": scale, "level": level,
                                     "t": adapter.training_timestep(level, 50), "lr": lr,
                                     "weight_decay": weight_decay, "gamma": gamma, "n_tokens": n_tokens,
                                     "init": init, "hflip": hflip, "flip": "pixels" if mirrored is not None else
                                     "latent", "seed": seed, "images": int(samples.shape[0]),
                                     "classifier_aug": classifier_aug, "dtype": dtype}),
                **adapter.fingerprints(clip)}
        for e in embs:
            e.meta.update(meta)
        q = max(1, len(res.losses) // 10)
        text = (f"{len(embs)} classes ({', '.join(e.name for e in embs)}), {steps} steps: class loss "
                f"{sum(res.losses[:q]) / q:.3f} → {sum(res.losses[-q:]) / q:.3f}, the classifier agreed on "
                f"{100 * sum(res.hits[:q]) / q:.0f} % → {100 * sum(res.hits[-q:]) / q:.0f} % of the estimates")
        return io.NodeOutput(embs, live.history, ui=live.ui(text))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "class"


class CASOSave(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("CASOSave"),
            display_name=display("CASO Save Embeddings"),
            category=SUBCATEGORY,
            description=(f"Saves each class as its own file in models/{EMBEDDINGS}/ (<prefix>_<class>.safetensors), in "
                         f"the layout ComfyUI's embedding loader reads: type embedding:<prefix>_<class> in any "
                         f"CLIPTextEncode prompt. An existing name is kept (ComfyUI's counter)."),
            inputs=[CASOEmbedding.Input("embeddings", tooltip="From CASO Train Embeddings."),
                    io.String.Input("filename_prefix", default="caso_colour", tooltip="File names start so.")],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, embeddings, filename_prefix) -> io.NodeOutput:
        who = display("CASO Save Embeddings")
        try:
            artifacts.safe_file_name(filename_prefix, who)  # the prefix itself, so that a refusal says what is wrong
        except artifacts.ArtifactError as e:
            raise ValueError(str(e)) from None
        items = [(f"{filename_prefix}_{_slug(e.name)}", *to_tensors(e), f"class {quote(e.name, 40)}")
                 for e in embeddings]
        paths = save_set(EMBEDDINGS, "caso", items, who)  # every name checked first: all classes or none
        return io.NodeOutput(ui=ui.PreviewText("saved: " + ", ".join(f"embedding:{p.stem}" for p in paths)))


class CASOLoad(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("CASOLoad"),
            display_name=display("CASO Load Embedding"),
            category=SUBCATEGORY,
            description=f"Loads one class saved by CASO Save Embeddings from models/{EMBEDDINGS}/ (validated).",
            inputs=[io.Combo.Input("name", options=file_names(EMBEDDINGS), tooltip="A CASO class file.")],
            outputs=[CASOEmbedding.Output(display_name="embeddings")],
        )

    @classmethod
    def execute(cls, name) -> io.NodeOutput:
        who = display("CASO Load Embedding")
        return io.NodeOutput([from_tensors(*artifacts.load(file_path(EMBEDDINGS, name), "caso", who))])


class CASOEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("CASOEncode"),
            display_name=display("CASO Encode"),
            category=SUBCATEGORY,
            description=("The CONDITIONING of a class (what CLIPTextEncode gives for embedding:<its file>), or of several "
                         "classes stitched (\"blue, circle\": one from each attribute, the extra input holding the "
                         "second attribute's classes), and the empty prompt's as the negative."),
            inputs=[io.Clip.Input("clip", tooltip="The text encoder the embedding was trained with."),
                    CASOEmbedding.Input("embeddings", tooltip="From Train or Load."),
                    io.String.Input("class_name", default="",
                                    tooltip="Its name or index (empty: the first); several separated by commas are "
                                            "stitched, in that order, looked up in embeddings then extra."),
                    CASOEmbedding.Input("extra", optional=True,
                                        tooltip="More classes to stitch (e.g. another attribute's, from Train or Load)."),
                    io.Combo.Input("stitch", options=list(adapter.STITCHES), default="tokens", optional=True,
                                   tooltip="tokens: one prompt [BOS, e_a, e_b, EOS] (= CLIPTextEncode of "
                                           "'embedding:a embedding:b'); concat_conditioning: each encoded alone, "
                                           "joined along the tokens (= the stock ConditioningConcat).")],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, clip, embeddings, class_name, extra=None, stitch="tokens") -> io.NodeOutput:
        who = display("CASO Encode")
        pool = list(embeddings) + list(extra or [])
        names = [e.name for e in pool]
        wanted = [t.strip() for t in class_name.split(",")] if class_name.strip() else [""]
        chosen = []
        try:
            for t in wanted:
                chosen.append(pool[classifiers.class_index(names, t) if t else 0])
        except ValueError as err:
            raise ValueError(f"{who}: {err}") from None
        for e in chosen:
            for warning in adapter.check_fingerprints(clip, e, who):
                log.warning(warning)
        cond = (adapter.encode_class(clip, chosen[0].tokens, who) if len(chosen) == 1 else
                adapter.stitch(clip, [e.tokens for e in chosen], stitch, who))
        return io.NodeOutput(cond, clip.encode_from_tokens_scheduled(clip.tokenize("")))


class CASOGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("CASOGuidance"),
            display_name=display("CASO Guidance"),
            category=SUBCATEGORY,
            description=(
                "A MODEL patch for any stock sampler: guidance D_u + λ·(D_c − D_u) only while the step's noise level "
                "is inside the window, the negative prompt's prediction outside. The window's ends are fractions of "
                "the timesteps on the steps-step DDIM grid, both included (0.3 = t 301 at 50 steps, as CASO Train's "
                "level; window_start = window_end guides one step); a sampling run with no step in the window runs "
                "unguided with a warning. λ may be negative (reverses the edit), which the samplers' cfg widgets do not allow; their "
                "cfg is ignored."),
            inputs=[io.Model.Input("model", tooltip="The model to guide (SD1.x/SDXL)."),
                    io.Float.Input("scale", default=10.0, min=-30.0, max=30.0, step=0.1, tooltip="λ (0 = the negative)."),
                    io.Float.Input("window_start", default=0.3, min=0.0, max=1.0, step=0.01, tooltip=(
                        "Guidance from this fraction of the timesteps (subtle attributes 0.1–0.3, coarse 0.8–0.9).")),
                    io.Float.Input("window_end", default=0.0, min=0.0, max=1.0, step=0.01, tooltip=(
                        "… down to this, included (equal to window_start: that one step).")),
                    io.Int.Input("steps", default=50, min=1, max=1000, optional=True, tooltip=(
                        "The DDIM grid the fractions name steps of: fraction f is t 1 + (1000/steps)·round(f·steps) "
                        "(paper 50). Set the sampler's step count with the ddim_uniform scheduler to guide exactly "
                        "those steps."))],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, scale, window_start, window_end, steps=50) -> io.NodeOutput:
        return io.NodeOutput(adapter.guidance_patch(model, scale, window_start, window_end, display("CASO Guidance"),
                                                    steps))


class CASOEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("CASOEdit"),
            display_name=display("CASO Edit"),
            category=SUBCATEGORY,
            description=("Edits an image with a class: DDIM-invert it with the empty prompt to the window's start (or "
                         "noise it there), then sample down with CASO Guidance's windowed λ."),
            inputs=[io.Model.Input("model", tooltip="SD1.x/SDXL."),
                    io.Conditioning.Input("positive", tooltip="CASO Encode's positive (or embedding:<file>)."),
                    io.Conditioning.Input("negative", tooltip="The empty prompt."),
                    io.Latent.Input("latent", tooltip="VAE Encode of the image."),
                    io.Int.Input("steps", default=50, min=2, max=1000, tooltip="ddim_uniform steps (paper 50)."),
                    io.Float.Input("scale", default=10.0, min=-30.0, max=30.0, step=0.1, tooltip="λ."),
                    io.Float.Input("window_start", default=0.3, min=0.0, max=1.0, step=0.01, tooltip=(
                        "Where the edit starts: a fraction of the timesteps on the steps grid (0.3 = t 301 at 50 "
                        "steps, 16 guided steps down to t 1).")),
                    io.Float.Input("window_end", default=0.0, min=0.0, max=1.0, step=0.01, tooltip=(
                        "Where it ends, included (equal to window_start: one guided step).")),
                    io.Combo.Input("inversion", options=["ddim", "noise"], default="ddim", tooltip=(
                        "ddim: invert with the empty prompt (keeps the image); noise: forward noise with the seed.")),
                    io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, tooltip="For inversion noise.")],
            outputs=[io.Latent.Output(display_name="edited"), io.Latent.Output(display_name="start")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, steps, scale, window_start, window_end, inversion,
                seed) -> io.NodeOutput:
        who = display("CASO Edit")
        samples = checked_latent(model, latent, who)
        refuse_noise_mask(latent, who)
        edited, start = adapter.edit(model, positive, negative, samples, steps, scale, window_start, window_end,
                                     inversion, seed, who)
        return io.NodeOutput({"samples": edited}, {"samples": start})


NODES = [ClassifierLoad, CLIPZeroShotClassifier, CLIPVisionLinearProbe, CASOTrain, CASOSave, CASOLoad, CASOEncode,
         CASOGuidance, CASOEdit]
