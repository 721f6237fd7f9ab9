"""UI-format workflows (what ComfyUI's page saves and users share) <-> API graphs.

The conversion reads the node definitions (INPUT_TYPES / RETURN_TYPES) of a started host,
so a renamed or re-typed input shows up as an error here, not in a user's graph.
"""
from __future__ import annotations

import json

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
SEED_CONTROL = "fixed"  # the value of the control_after_generate widget that follows a seed


def _inputs(cls) -> list[tuple[str, object, dict]]:
    spec = cls.INPUT_TYPES()
    out = []
    for group in ("required", "optional"):
        for name, value in spec.get(group, {}).items():
            kind = value[0]
            opts = value[1] if len(value) > 1 and isinstance(value[1], dict) else {}
            if kind == "COMBO":  # newer (V3) nodes spell a combo as "COMBO" with its options
                kind = list(opts.get("options", []))
            out.append((name, kind, opts))
    return out


def is_widget(kind) -> bool:
    return isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES


def widget_names(cls) -> list[str]:
    """The widget values' order in a UI node, seed controls included (as None)."""
    names = []
    for name, kind, opts in _inputs(cls):
        if is_widget(kind):
            names.append(name)
            if opts.get("control_after_generate"):
                names.append(None)
    return names


def api_to_ui(graph: dict, node_classes: dict) -> dict:
    """An API graph -> a UI workflow, laid out left to right by depth."""
    ids = {k: i + 1 for i, k in enumerate(graph)}
    depth = {}

    def d(k):
        if k not in depth:
            ups = [v[0] for v in graph[k]["inputs"].values() if isinstance(v, list)]
            depth[k] = 1 + max((d(u) for u in ups), default=-1)
        return depth[k]

    links, nodes, row = [], [], {}
    outputs = {k: {} for k in graph}
    for k, node in graph.items():
        cls = node_classes[node["class_type"]]
        unknown = set(node["inputs"]) - {name for name, _, _ in _inputs(cls)}
        if unknown:
            raise ValueError(f"{node['class_type']} has no input named {sorted(unknown)}: the node definition changed")
        sockets, widgets = [], []
        for name, kind, opts in _inputs(cls):
            value = node["inputs"].get(name)
            if is_widget(kind):
                if isinstance(value, list):
                    raise ValueError(f"{node['class_type']}.{name} is a widget; converting widgets to inputs is not supported")
                widgets.append(value if value is not None else opts.get("default"))
                if opts.get("control_after_generate"):
                    widgets.append(SEED_CONTROL)
            else:
                link = None
                if isinstance(value, list):
                    link = len(links) + 1
                    src, slot = value
                    links.append([link, ids[src], slot, ids[k], len(sockets), kind])
                    outputs[src].setdefault(slot, []).append(link)
                sockets.append({"name": name, "type": kind, "link": link})
        col = d(k)
        row[col] = row.get(col, 0) + 1
        nodes.append({"id": ids[k], "type": node["class_type"], "pos": [40 + 340 * col, 40 + 260 * (row[col] - 1)],
                      "size": [315, 200], "flags": {}, "order": 0, "mode": 0, "inputs": sockets,
                      "outputs": [], "properties": {"Node name for S&R": node["class_type"]},
                      "widgets_values": widgets, "_cls": cls, "_key": k})
    order = sorted(nodes, key=lambda n: depth[n["_key"]])
    for i, n in enumerate(order):
        n["order"] = i
    for n in nodes:
        cls, k = n.pop("_cls"), n.pop("_key")
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        n["outputs"] = [{"name": names[i], "type": t, "links": outputs[k].get(i, []), "slot_index": i}
                        for i, t in enumerate(cls.RETURN_TYPES)]
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {}, "version": 0.4}


def ui_to_api(workflow: dict, node_classes: dict) -> dict:
    """A UI workflow -> an API graph, checking it against the node definitions.

    Raises ValueError naming the node and input for: an unknown node type, a widget
    count that does not match (fewer values are the node's widgets before some were added at
    its end: those take their defaults, as on the page), a widget value of the wrong type or out of range, a link
    whose type does not match the input, a required input left unconnected.
    """
    by_id = {n["id"]: n for n in workflow["nodes"]}
    link_src = {l[0]: l for l in workflow["links"]}
    graph = {}
    for n in workflow["nodes"]:
        if n.get("mode", 0) != 0:
            continue
        if n["type"] not in node_classes:
            raise ValueError(f"node #{n['id']}: '{n['type']}' is not installed")
        cls = node_classes[n["type"]]
        names = widget_names(cls)
        values = list(n.get("widgets_values", []))
        if len(values) < len(names):
            # A workflow saved before a node gained widgets at its end: the page keeps those
            # widgets at their defaults (it assigns the saved values by position), and so does this.
            defaults = {name: opts.get("default") for name, kind, opts in _inputs(cls) if is_widget(kind)}
            added = names[len(values):]
            if any(name is None or defaults.get(name) is None for name in added):
                raise ValueError(f"node #{n['id']} {n['type']}: {len(values)} widget values, the node has {len(names)}")
            values += [defaults[name] for name in added]
        if len(values) != len(names):
            raise ValueError(f"node #{n['id']} {n['type']}: {len(values)} widget values, the node has {len(names)}")
        inputs = {}
        for name, value in zip(names, values):
            if name is not None:
                inputs[name] = value
        kinds = {name: kind for name, kind, _ in _inputs(cls)}
        for name, kind, opts in _inputs(cls):
            if isinstance(kind, (list, tuple)) and name in inputs and inputs[name] not in kind and not opts.get("allow_missing_file"):
                # model file lists and uploaded images depend on the user's folders
                if not name.endswith("_name") and not opts.get("image_upload"):
                    raise ValueError(f"node #{n['id']} {n['type']}: {name}={inputs[name]!r} is not one of {kind[:8]}")
            elif isinstance(kind, str) and kind in WIDGET_TYPES and name in inputs:
                _check_widget_value(f"node #{n['id']} {n['type']}", name, kind, opts, inputs[name])
        for sock in n.get("inputs", []):
            if sock.get("link") is None:
                continue
            _, src, slot, _, _, ltype = link_src[sock["link"]]
            want = kinds.get(sock["name"])
            if want is None:
                raise ValueError(f"node #{n['id']} {n['type']}: no input named {sock['name']!r}")
            src_cls = node_classes[by_id[src]["type"]]
            have = src_cls.RETURN_TYPES[slot]
            if want != have and want != "*":
                raise ValueError(f"node #{n['id']} {n['type']}: input {sock['name']} wants {want}, gets {have}")
            inputs[sock["name"]] = [str(src), slot]
        missing = [name for name in cls.INPUT_TYPES().get("required", {}) if name not in inputs]
        if missing:
            raise ValueError(f"node #{n['id']} {n['type']}: required input {', '.join(missing)} is not connected")
        graph[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return graph


def _check_widget_value(where: str, name: str, kind: str, opts: dict, value) -> None:
    """A widget value of the right type, inside the node's min/max."""
    types = {"INT": (int,), "FLOAT": (int, float), "STRING": (str,), "BOOLEAN": (bool,)}[kind]
    if isinstance(value, bool) != (kind == "BOOLEAN") or not isinstance(value, types):
        raise ValueError(f"{where}: {name}={value!r} is not a {kind}")
    if kind in ("INT", "FLOAT") and not opts.get("min", value) <= value <= opts.get("max", value):
        raise ValueError(f"{where}: {name}={value!r} is outside [{opts.get('min')}, {opts.get('max')}]")


def load(path) -> dict:
    with open(path) as f:
        return json.load(f)
