"""Prompt encoding shared by tests and benchmarks."""
import torch


def encode_subjects(pack, clip, text, subjects, attributes=""):
    """(positive with subjects, empty negative) as the pack's node and CLIPTextEncode make them."""
    with torch.inference_mode():
        pos = pack.nodes.AIT2ISubjectPrompt.execute(clip=clip, text=text, subjects=subjects,
                                                    attributes=attributes).result[0]
        neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    return pos, neg
