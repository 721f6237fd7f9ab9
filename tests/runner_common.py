"""Prompt encoding shared by tests and benchmarks."""
import torch


def encode_subjects(pack, clip, text, subjects, attributes=""):
    """(positive with subjects, empty negative) as the pack's node and CLIPTextEncode make them."""
    node = pack.NODE_CLASS_MAPPINGS["AIT2ISubjectPrompt"]()
    with torch.inference_mode():
        pos = node.encode(clip, text, subjects, attributes)[0]
        neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    return pos, neg
