"""The demo's verdict on a scenes-world example (harness/demo.py scene_keeps): what a title's promise asks of the
scene judge's reading of a result, against the reading of its source."""
from harness import inputs
from harness.demo import describe_scene, scene_keeps
from harness.scenes import judges


def _seen(scene, **changes):
    v = judges.expected(scene, 0)
    for k, val in changes.items():
        setattr(v, k, val)
    return v


def test_objects_kept_means_the_sources_objects_left_to_right():
    spec = dict(inputs.EXAMPLE_IMAGES[inputs.SCENE_IMAGE])
    assert spec.pop("world") == "scenes"
    scene = inputs.scene(**spec)  # the scenes examples' input image
    src = judges.expected(scene, 0)
    assert describe_scene(src) == "objects: large red circle, small blue square; background: striped; style: normal"
    assert scene_keeps({"objects": "kept", "texture": "checked"}, _seen(scene, texture="checked"), src)
    assert not scene_keeps({"objects": "kept", "texture": "checked"}, _seen(scene), src)       # texture not edited
    recoloured = _seen(scene, objects=[dict(src.objects[0], colour="green"), src.objects[1]])
    assert not scene_keeps({"objects": "kept"}, recoloured, src)
    assert not scene_keeps({"objects": "kept"}, _seen(scene, objects=src.objects[:1]), src)    # one lost
    assert scene_keeps({"objects": ["green circle", "blue"]}, recoloured, src)
    assert not scene_keeps({"objects": ["green circle", "red"]}, recoloured, src)
    assert scene_keeps({"style": "not night"}, _seen(scene, style="pastel"))
    assert not scene_keeps({"style": "not night"}, _seen(scene, style="night"))
