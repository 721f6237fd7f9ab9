"""Everything that touches ComfyUI internals. A host change is mended here only."""
