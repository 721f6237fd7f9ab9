"""AI-T2I Subject Prompt: encodes the prompt and marks its subject words."""
from __future__ import annotations

from comfy_api.latest import io

from ..ai_t2i_attention import PRECEDING, ResolvedSubjects, parse_attributes, parse_list
from ..ai_t2i_attention.tokens import resolve_stream_words
from .host.conditioning import SUBJECTS_KEY
from .host.tokens import presence_columns, subject_streams


class AIT2ISubjectPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIT2ISubjectPrompt",
            display_name="AI-T2I Subject Prompt",
            category="conditioning/AI-T2I",
            description=("Encodes a prompt like CLIP Text Encode and marks which words are the subjects that AI-T2I "
                         "keeps whole and apart. Use it for the positive prompt."),
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the checkpoint (or of the LoRA loader)."),
                io.String.Input("text", multiline=True, dynamic_prompts=True, default="a cat and a dog",
                                tooltip="The prompt."),
                io.String.Input("subjects", default="cat, dog", tooltip=(
                    "The subject words of the prompt, comma separated (2 to 8 usually; 1 works for presence only). "
                    "Several words per subject are fine ('teddy bear'); so are LoRA trigger words and "
                    "'embedding:name'. If a word appears twice in the prompt, 'cat#2' picks the second one. A word "
                    "in another case or number ('circle' for the prompt's 'circles') is matched to the prompt's "
                    "word, and the run log shows which.")),
                io.String.Input("attributes", default="", optional=True, tooltip=(
                    "Optional attribute:subject pairs, comma separated, e.g. 'red:car, blue:bird'. The attribute's "
                    "attention is pulled onto its subject. 'preceding' pairs each subject with the word right "
                    "before it, as the reference code does (in 'a cat' that is 'a').")),
            ],
            outputs=[io.Conditioning.Output(tooltip=(
                "The encoded prompt, carrying the subjects' token positions for the AI-T2I sampler."))],
        )

    @classmethod
    def execute(cls, clip, text, subjects, attributes="") -> io.NodeOutput:
        if clip is None:
            raise RuntimeError("clip input is invalid: None. If the clip is from a checkpoint loader node, "
                               "the checkpoint does not contain a text encoder.")
        streams, tokens = subject_streams(clip, text)
        words = parse_list(subjects)
        pairs = parse_attributes(attributes)
        groups, matched = resolve_stream_words(text, streams, words, pairs, presence_columns(tokens))
        if pairs == PRECEDING:
            pairs = [(PRECEDING, w) for w in words]
        spec = ResolvedSubjects(text, tuple(words), tuple(pairs), groups, matched)
        conditioning = clip.encode_from_tokens_scheduled(tokens)
        return io.NodeOutput([[c[0], {**c[1], SUBJECTS_KEY: spec}] for c in conditioning])
