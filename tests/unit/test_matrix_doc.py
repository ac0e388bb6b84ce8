"""docs/families.md and the README's family table are the rendering of docs/matrix/families.json (the cells the host
tests observed, tests/matrix_doc.py), complete for every family and node on both hosts."""
import matrix_doc
from harness import families


def test_the_documents_are_the_rendering_of_the_recorded_cells():
    data = matrix_doc.load()
    assert matrix_doc.DOC.read_text() == matrix_doc.render(data), "run `python tests/matrix_doc.py`"
    assert matrix_doc.DOC2.read_text() == matrix_doc.render_precisions(matrix_doc.load("precisions"),
                                                                         matrix_doc.load("patches"))
    readme = matrix_doc.README.read_text()
    assert matrix_doc.readme_with_table(readme, data) == readme, "run `python tests/matrix_doc.py`"


def test_every_family_and_node_is_recorded_on_both_hosts():
    data = matrix_doc.load()
    for host in matrix_doc.HOSTS:
        for label in families.FAMILIES:
            assert label in data["models"].get(host, {}), (host, label)
            cells = data["cells"][host][label]
            assert set(cells) == set(matrix_doc.NODES), (host, label, set(matrix_doc.NODES) ^ set(cells))
            for node, cell in cells.items():
                assert cell["outcome"] in ("works", "refused", "inexact") and cell["note"], (host, label, node)


def test_every_precision_and_patch_is_recorded_on_both_hosts():
    for table, rows, cols in (("precisions", matrix_doc.PRECISIONS, matrix_doc.PRECISION_COLUMNS),
                              ("patches", matrix_doc.PATCHES, matrix_doc.PATCH_COLUMNS)):
        data = matrix_doc.load(table)
        for host in matrix_doc.HOSTS:
            for row in rows:
                assert set(data["cells"][host][row]) == set(cols), (table, host, row)


def test_a_refusal_reason_is_listed_once_for_every_node_family_and_shape():
    data = {"models": {"0.33": {"Flux.1": {"config": "Flux"}}}}
    note = ("CASO Edit (InvEdit): this is a flow-matching model (Flux sampled with ModelSamplingFlux + CONST, as …), "
            "and CASO Edit (InvEdit) works on … the LATENT has shape (1, 16, 8, 8) but")
    assert matrix_doc._generic(note, data, "Flux.1") == (
        "this is a flow-matching model (<family> sampled with <its sampling>, as …), and this node works on … the "
        "LATENT has shape (…) but")
