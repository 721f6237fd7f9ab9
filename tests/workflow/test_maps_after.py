"""'AI-T2I Record Maps After Guidance' in a real graph: the maps node then shows before and after."""


def test_record_maps_after_in_a_graph(tmp_path):
    from tools.comfy_runner import Host
    from tools.make_figures import heatmap_graph
    host = Host(output_dir=str(tmp_path))
    out = host.run(heatmap_graph("a red circle and a blue square", "circle, square", seed=1, steps=4, strength=10.0,
                                 prefix="after"))
    assert len(out["15"]["images"]) == 2 * 2 * 2  # steps 0 and 1 x (before, after) x 2 subjects
    legend = [line for line in out["14"]["text"][0].splitlines() if " update: " in line]
    assert [line.split(":")[0] for line in legend] == ["step 0 before update", "step 0 after update",
                                                       "step 1 before update", "step 1 after update"]
