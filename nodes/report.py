"""Reconstruction report: how close a regenerated latent (and its decoded image) is to the source."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..adapters.latent import InversionInfo
from ..metrics import max_abs, mse, psnr
from .common import CATEGORY, display, node_id


def format_report(lat_mse: float, lat_max: float, pix_psnr: float | None, info: InversionInfo | None) -> str:
    lines = [f"latent MSE      {lat_mse:.3e}", f"latent max|err|  {lat_max:.3e}"]
    if pix_psnr is not None:
        lines.append(f"pixel PSNR      {pix_psnr:.2f} dB")
    if info is not None:
        lines += info.describe()
    return "\n".join(lines)


class ReconstructionReport(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("ReconstructionReport"),
            display_name=display("Reconstruction Report"),
            category=f"{CATEGORY}/inversion",
            description=(
                "Compares a reconstruction with its source: latent MSE and max-abs error, and pixel PSNR when a VAE "
                "and the source image are connected. Shows the figures on the node and returns them as text."),
            inputs=[
                io.Latent.Input("original", tooltip="The source latent (VAE Encode of the image)."),
                io.Latent.Input("reconstruction", tooltip="The latent regenerated from the inverted noise."),
                io.Vae.Input("vae", optional=True, tooltip="Decodes the reconstruction for the pixel PSNR."),
                io.Image.Input("source_image", optional=True, tooltip="The source image, for the pixel PSNR."),
            ],
            outputs=[io.String.Output(display_name="report")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, original, reconstruction, vae=None, source_image=None) -> io.NodeOutput:
        who = display("Reconstruction Report")
        a, b = original["samples"], reconstruction["samples"]
        if a.shape != b.shape:
            raise ValueError(f"{who}: the latents differ in shape, {tuple(a.shape)} vs {tuple(b.shape)}: connect the "
                             f"source latent and the reconstruction made from its own inversion.")
        info = InversionInfo.from_latent(reconstruction)
        if info is not None and info.latent_shape is not None and list(info.latent_shape) != list(a.shape):
            raise ValueError(f"{who}: the reconstruction comes from the inversion of a {info.latent_shape} latent, "
                             f"not of this {list(a.shape)} original: connect the latent that was inverted.")
        pix = None
        if (vae is None) != (source_image is None):
            raise ValueError(f"{who}: the pixel PSNR needs both a VAE and the source image; connect both or neither.")
        if vae is not None:
            channels = getattr(vae, "latent_channels", None)
            if channels is not None and b.shape[1] != channels:
                raise ValueError(f"{who}: the latents have {b.shape[1]} channels (shape {tuple(b.shape)}), but the VAE "
                                 f"decodes {channels}-channel latents; connect the VAE of the model that made them "
                                 f"(the VAE output of the same checkpoint loader)")
            decoded = vae.decode(b)
            source_image = vae.vae_encode_crop_pixels(source_image)  # the region VAE Encode kept (multiples of 8)
            if decoded.shape != source_image.shape:
                raise ValueError(f"{who}: the decoded reconstruction is {tuple(decoded.shape)} but the source image "
                                 f"is {tuple(source_image.shape)}; use the image that was VAE-encoded.")
            pix = psnr(decoded.clamp(0, 1), source_image.clamp(0, 1))
        text = format_report(mse(a, b), max_abs(a, b), pix, info)
        return io.NodeOutput(text, ui=ui.PreviewText(text))


NODES = [ReconstructionReport]
