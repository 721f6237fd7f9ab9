"""AI-T2I Subject Prompt: encodes the prompt and marks its subject words."""
from __future__ import annotations

from ..ai_t2i_attention import PRECEDING, ResolvedSubjects, parse_attributes, parse_list, resolve
from .host.conditioning import SUBJECTS_KEY
from .host.tokens import presence_columns, tokenization


class AIT2ISubjectPrompt:
    DESCRIPTION = ("Encodes a prompt like CLIP Text Encode and marks which words are the subjects that AI-T2I keeps "
                   "whole and apart. Use it for the positive prompt.")
    CATEGORY = "conditioning/AI-T2I"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The encoded prompt, carrying the subjects' token positions for the AI-T2I sampler.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "The text encoder of the checkpoint (or of the LoRA loader)."}),
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": "a cat and a dog",
                                    "tooltip": "The prompt."}),
                "subjects": ("STRING", {"default": "cat, dog", "tooltip":
                    "The subject words of the prompt, comma separated (2 to 8 usually; 1 works for presence only). "
                    "Several words per subject are fine ('teddy bear'); so are LoRA trigger words and "
                    "'embedding:name'. If a word appears twice in the prompt, 'cat#2' picks the second one."}),
            },
            "optional": {
                "attributes": ("STRING", {"default": "", "tooltip":
                    "Optional attribute:subject pairs, comma separated, e.g. 'red:car, blue:bird'. The attribute's "
                    "attention is pulled onto its subject. 'preceding' pairs each subject with the word right before "
                    "it, as the reference code does (in 'a cat' that is 'a')."}),
            },
        }

    def encode(self, clip, text, subjects, attributes=""):
        if clip is None:
            raise RuntimeError("clip input is invalid: None. If the clip is from a checkpoint loader node, "
                               "the checkpoint does not contain a text encoder.")
        prompt, tokenize_word, tokens = tokenization(clip, text)
        words = parse_list(subjects)
        pairs = parse_attributes(attributes)
        groups = resolve(text, prompt, tokenize_word, words, pairs, presence_columns(tokens))
        if pairs == PRECEDING:
            pairs = [(PRECEDING, w) for w in words]
        spec = ResolvedSubjects(text, tuple(words), tuple(pairs), groups)
        conditioning = clip.encode_from_tokens_scheduled(tokens)
        return ([[c[0], {**c[1], SUBJECTS_KEY: spec}] for c in conditioning],)
