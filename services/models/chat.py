"""Chat format: the Llama 2 chat template, or a checkpoint's own template, and answer-only loss masks.

Llama 2 §3.1: prompt and answer are concatenated and the loss is zeroed on
prompt tokens. A dialogue is cut into text segments that are either prompt
(masked) or answer (trained); each segment is tokenized on its own, so the mask
follows the text exactly whichever template produced it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from alignline.storage.schemas import ChatFormatError, Message, Role, validate_dialogue  # noqa: F401 (the dialogue contract)

TrainOn = Literal["all", "last"]
IGNORE_INDEX = -100  # label value torch's cross_entropy skips


# meta-llama/llama generation.py: B_INST, E_INST, B_SYS, E_SYS.
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
BOS, EOS = "<s>", "</s>"

# The same format as `llama2_segments`, for tools that only read `tokenizer.chat_template`.
LLAMA2_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set sys = messages[0]['content'] | trim -%}{%- set msgs = messages[1:] -%}"
    "{%- else -%}{%- set sys = none -%}{%- set msgs = messages -%}{%- endif -%}"
    "{%- for m in msgs -%}"
    "{%- if m['role'] == 'user' -%}"
    "{{ bos_token + '[INST] ' }}"
    "{%- if loop.first and sys is not none -%}{{ '<<SYS>>\\n' + sys + '\\n<</SYS>>\\n\\n' }}{%- endif -%}"
    "{{ m['content'] | trim + ' [/INST]' }}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{{ ' ' + m['content'] | trim + ' ' + eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


@dataclass(frozen=True)
class EncodedDialogue:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt tokens; same length as input_ids

    @property
    def num_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def llama2_segments(messages: Sequence[Message]) -> list[tuple[str, bool]]:
    """(text, is_answer) pieces of `<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s>`..."""
    system = messages[0]["content"].strip() if messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    segments: list[tuple[str, bool]] = []
    for i in range(0, len(turns), 2):
        user = turns[i]["content"].strip()
        if i == 0 and system is not None:
            user = B_SYS + system + E_SYS + user  # Llama 2: system prompt folded into the first user turn
        segments.append((f"{BOS}{B_INST} {user} {E_INST}", False))
        if i + 1 < len(turns):
            segments.append((f" {turns[i + 1]['content'].strip()} {EOS}", True))
    return segments


def render_llama2(messages: Sequence[Message]) -> str:
    return "".join(text for text, _ in llama2_segments(messages))


def template_segments(tokenizer, messages: Sequence[Message]) -> list[tuple[str, bool]]:
    """Pieces under the tokenizer's own `chat_template`: an answer is what rendering it adds to the prompt before it."""
    def render(msgs, gen: bool) -> str:
        return tokenizer.apply_chat_template(list(msgs), tokenize=False, add_generation_prompt=gen)

    segments: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt, through = render(messages[:i], True), render(messages[: i + 1], False)
        if not prompt.startswith(done) or not through.startswith(prompt):
            raise ChatFormatError("the checkpoint's chat_template does not render dialogues as growing prefixes; "
                                  "the answer-only mask cannot be derived from it")
        segments += [(prompt[len(done):], False), (through[len(prompt):], True)]
        done = through
    full = render(messages, messages[-1]["role"] == "user")
    if not full.startswith(done):
        raise ChatFormatError("the checkpoint's chat_template renders the whole dialogue differently from its prefixes")
    if full[len(done):]:
        segments.append((full[len(done):], False))
    return [(t, a) for t, a in segments if t]


def uses_llama2_format(tokenizer) -> bool:
    """Tokenizers trained here carry the Llama 2 template; a checkpoint may bring another one."""
    template = getattr(tokenizer, "chat_template", None)
    return template is None or template == LLAMA2_CHAT_TEMPLATE


def chat_segments(tokenizer, messages: Sequence[Message]) -> list[tuple[str, bool]]:
    return llama2_segments(messages) if uses_llama2_format(tokenizer) else template_segments(tokenizer, messages)


def encode_dialogue(tokenizer, messages: Sequence[Message], train_on: TrainOn = "all") -> EncodedDialogue:
    """Token ids and labels; labels are IGNORE_INDEX except on answer tokens.

    train_on="last" trains only the final answer (Llama 2 §3.3 GAtt zeroes the
    loss of earlier turns).
    """
    validate_dialogue(messages)
    segments = chat_segments(tokenizer, messages)
    last_answer = max(i for i, (_, is_answer) in enumerate(segments) if is_answer)
    input_ids: list[int] = []
    labels: list[int] = []
    for i, (text, is_answer) in enumerate(segments):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        trained = is_answer and (train_on == "all" or i == last_answer)
        input_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
    return EncodedDialogue(input_ids, labels)


def encode_prompt(tokenizer, messages: Sequence[Message]) -> list[int]:
    """Ids of a dialogue ending in a user turn, ready for the model to write the answer."""
    validate_dialogue(messages, for_generation=True)
    text = "".join(t for t, _ in chat_segments(tokenizer, messages))
    return tokenizer(text, add_special_tokens=False)["input_ids"]
