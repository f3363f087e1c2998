"""Parameter-efficient adaptation: LoRA adapters (via peft) on the text encoder, backbone and head."""
