"""Every refusal names node, problem and fix (issue 29, item 9): an error raised inside one of the pack's SAMPLERs
while a stock node runs it names the pack's node and the running node's id; a DOODL target class not in the
classifier lists the classes and says what to type; an inverted CASO window says to swap its ends."""
import pytest

from harness import host

CKPT = "v1-5-pruned-emaonly-fp16.safetensors"


def test_a_sampler_error_inside_a_stock_node_names_the_samplers_node_and_the_running_node(comfy):
    g = comfy.graph()
    ck = g.node("CheckpointLoaderSimple", ckpt_name=CKPT)
    flow = g.node("ModelSamplingSD3", model=ck.out(0), shift=3.0)   # a flow model: the Asyrp sampler refuses it
    pos = g.node("CLIPTextEncode", clip=ck.out(1), text="a circle")
    neg = g.node("CLIPTextEncode", clip=ck.out(1), text="")
    sampler = g.node("InvEditSamplerAsyrp", t_boost=0, eta_boost=1.0)
    sig = g.node("BasicScheduler", model=flow.out(0), scheduler="simple", steps=3, denoise=1.0)
    lat = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    run = g.node("SamplerCustom", model=flow.out(0), add_noise=True, noise_seed=0, cfg=3.0, positive=pos.out(0),
                 negative=neg.out(0), sampler=sampler.out(0), sigmas=sig.out(0), latent_image=lat.out(0))
    g.node("PreviewAny", source=run.out(0))
    with pytest.raises(host.PromptError) as e:
        comfy.run_prompt(g.finalize())
    assert f"Asyrp Sampler (InvEdit), run by node #{run.id}: this is a flow-matching model" in str(e.value)


def test_a_doodl_target_not_in_the_classifier_lists_its_classes_and_what_to_type(comfy):
    import nodes
    with pytest.raises(ValueError, match=r"DOODL Classifier Loss \(InvEdit\): target 'purple' is not one of the "
                                         r"classifier's classes \('red, .*'\); type one of those names in target, "
                                         r"or an index 0"):
        nodes.NODE_CLASS_MAPPINGS["InvEditDOODLClassifierLoss"].execute(
            classifier="shapes_colour.safetensors", architecture="small_cnn", target="purple", num_classes=0,
            normalisation="none", mode="cross_entropy", weight=1.0, crops=4, crop_power=0.3, input_size=64)


def test_an_inverted_caso_window_says_to_swap_its_ends(comfy):
    import nodes
    model = nodes.CheckpointLoaderSimple().load_checkpoint(CKPT)[0]
    with pytest.raises(ValueError, match=r"CASO Guidance \(InvEdit\): window_start 0.2 is below window_end 0.5.*swap "
                                         r"them \(window_start 0.5, window_end 0.2\)"):
        nodes.NODE_CLASS_MAPPINGS["InvEditCASOGuidance"].execute(model, 1.0, 0.2, 0.5)
