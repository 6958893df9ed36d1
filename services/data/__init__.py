"""data: SFT demonstrations (JSONL validation, Arrow tables), the built-in default SFT set and demo comparisons,
and imports of public SFT / preference / prompt files (TRL and OpenRLHF layouts)."""
from .comparisons_demo import demo_comparisons_metadata, demo_comparisons_table
from .default_prompts import DEFAULT_EVAL_PROMPTS, DEFAULT_PROMPTS, default_eval_prompts_table, default_prompts_table
from .default_sft import default_sft_metadata, default_sft_table, safety_dialogues, stdlib_dialogues
from .importers import IMPORT_KINDS, ImportFileError, ImportResult, import_records, read_records
from .sft_records import SFT_SCHEMA, SFTDataError, dialogues_table, read_jsonl, table_dialogues, to_dialogue

__all__ = ["DEFAULT_EVAL_PROMPTS", "DEFAULT_PROMPTS", "default_eval_prompts_table", "default_prompts_table", "demo_comparisons_metadata", "demo_comparisons_table", "default_sft_metadata", "default_sft_table",
           "safety_dialogues", "stdlib_dialogues", "SFT_SCHEMA", "SFTDataError", "dialogues_table", "read_jsonl", "table_dialogues", "to_dialogue",
           "IMPORT_KINDS", "ImportFileError", "ImportResult", "import_records", "read_records"]
