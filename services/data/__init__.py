"""data: SFT demonstrations (JSONL validation, Arrow tables) and the built-in default SFT set."""
from .default_sft import default_sft_metadata, default_sft_table, safety_dialogues, stdlib_dialogues
from .sft_records import SFT_SCHEMA, SFTDataError, dialogues_table, read_jsonl, table_dialogues, to_dialogue

__all__ = ["default_sft_metadata", "default_sft_table", "safety_dialogues", "stdlib_dialogues", "SFT_SCHEMA",
           "SFTDataError", "dialogues_table", "read_jsonl", "table_dialogues", "to_dialogue"]
