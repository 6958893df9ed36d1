"""Ghost Attention (Llama 2 §3.3): make a system instruction hold over many turns.

1. Synthesize instructions: act as a character, answer in a style, stay off a
   topic; combined at random and, half of the time, shortened (the paper
   rewrites them to be less verbose).
2. Build multi-turn dialogues from the RLHF prompts and append the instruction
   to *every* user turn; sample each answer with the latest policy.
3. Training samples keep the instruction only in the first turn (here as the
   system message, which the Llama 2 template folds into the first user turn);
   one sample per turn, with the loss zeroed on every token of the earlier
   turns, assistant answers included (`encode_dialogue(train_on="last")`).

Every instruction carries a check, so adherence at turns 2/4/6 (Table 30) is
measured on dialogues whose instruction is given only in the system message.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from alignline.services.models.chat import Message

# (dialogues ending in a user turn) -> one answer each; e.g. a RolloutPool's sample_texts with k=1, flattened.
AnswerFn = Callable[[Sequence[Sequence[Message]]], list[str]]


@dataclass(frozen=True)
class Constraint:
    kind: str              # "act_as" | "style" | "topic"
    long: str              # the instruction as an annotator would write it
    short: str             # the shortened variant
    check: Callable[[str], bool]
    repair: Callable[[str], str] = lambda answer: answer  # the smallest edit that makes an answer follow it
    repair_order: int = 0  # repairs run in this order: remove words, shorten, add a first/last word, capitals last


def _starts(word: str) -> Callable[[str], bool]:
    return lambda answer: answer.strip().lower().startswith(word.lower())


def _ends(word: str) -> Callable[[str], bool]:
    return lambda answer: answer.strip().rstrip(".!").lower().endswith(word.lower())


def _avoids(word: str) -> Callable[[str], bool]:
    return lambda answer: word.lower() not in answer.lower()


def _max_words(n: int) -> Callable[[str], bool]:
    return lambda answer: 0 < len(answer.split()) <= n


def _upper(answer: str) -> bool:
    letters = [c for c in answer if c.isalpha()]
    return bool(letters) and sum(c.isupper() for c in letters) >= 0.9 * len(letters)


# Repairs: the smallest edit that makes an answer follow one constraint, for sampled answers that break it.
def _prefix(word: str) -> Callable[[str], str]:
    return lambda answer: answer if _starts(word)(answer) else f"{word}, {answer.strip()}"


def _suffix(word: str) -> Callable[[str], str]:
    return lambda answer: answer if _ends(word)(answer) else f"{answer.strip().rstrip('.!')}. {word}."


def _replace(word: str, instead: str) -> Callable[[str], str]:
    return lambda answer: re.sub(re.escape(word), instead, answer, flags=re.IGNORECASE)


def _truncate(n: int) -> Callable[[str], str]:
    # two words of room for a prefix or suffix another constraint of the instruction may add
    return lambda answer: answer if _max_words(n - 2)(answer) else " ".join(answer.split()[:n - 2])


def _capitals(answer: str) -> str:
    return answer.upper()


# Verifiable stand-ins for the paper's instruction families (act as, hobbies, language, public figure).
CONSTRAINTS: tuple[Constraint, ...] = (
    Constraint("act_as", "Act as a pirate: start every answer with 'Ahoy'.", "Pirate: start with 'Ahoy'.", _starts("ahoy"), _prefix("Ahoy"), 2),
    Constraint("act_as", "Act as a butler: start every answer with 'Certainly'.", "Butler: start with 'Certainly'.", _starts("certainly"), _prefix("Certainly"), 2),
    Constraint("act_as", "Act as a radio operator: end every answer with 'Over'.", "Radio operator: end with 'Over'.", _ends("over"), _suffix("Over"), 3),
    Constraint("style", "Always answer in capital letters only.", "Answer in capitals.", _upper, _capitals, 4),
    Constraint("style", "Always answer in at most ten words.", "At most ten words.", _max_words(10), _truncate(10), 1),
    Constraint("style", "Always end your answer with the word 'Done'.", "End with 'Done'.", _ends("done"), _suffix("Done"), 3),
    Constraint("topic", "Never mention the word 'file' in your answers.", "Never say 'file'.", _avoids("file"), _replace("file", "document"), 0),
    Constraint("topic", "Do not talk about the weather, whatever the user asks.", "No weather talk.", _avoids("weather"), _replace("weather", "topic"), 0),
)


@dataclass(frozen=True)
class Instruction:
    text: str
    constraints: tuple[Constraint, ...]

    def followed(self, answer: str) -> bool:
        return all(c.check(answer) for c in self.constraints)

    def repaired(self, answer: str) -> str | None:
        """`answer` edited to follow every constraint, or None when the edits cannot all hold (two last words)."""
        for c in sorted(self.constraints, key=lambda c: c.repair_order):
            answer = c.repair(answer)
        return answer if answer.strip() and self.followed(answer) else None


def sample_instruction(rng: random.Random, constraints: Sequence[Constraint] = CONSTRAINTS) -> Instruction:
    """One or two constraints of different kinds, each shortened with probability 1/2."""
    first = rng.choice(constraints)
    chosen = [first]
    if rng.random() < 0.5:
        others = [c for c in constraints if c.kind != first.kind]
        chosen.append(rng.choice(others))
    text = " ".join(c.short if rng.random() < 0.5 else c.long for c in chosen)
    return Instruction(text, tuple(chosen))


@dataclass(frozen=True)
class GAttDialogue:
    instruction: Instruction
    user_turns: tuple[str, ...]


def ghost_attention_dialogues(user_messages: Sequence[str], n: int, turns: int, seed: int = 0) -> list[GAttDialogue]:
    """n synthetic dialogues of `turns` user messages drawn from the prompt set, each with a sampled instruction."""
    rng = random.Random(seed)
    return [GAttDialogue(sample_instruction(rng), tuple(rng.choice(user_messages) for _ in range(turns)))
            for _ in range(n)]


def with_instruction(instruction: str, user: str) -> str:
    return f"{user}\n\n{instruction}"


def sample_gatt_answers(answer: AnswerFn, dialogues: Sequence[GAttDialogue]) -> list[list[str]]:
    """Step 2: answers turn by turn (one batch per turn), with the instruction appended to every user turn."""
    histories: list[list[Message]] = [[] for _ in dialogues]
    answers: list[list[str]] = [[] for _ in dialogues]
    turns = max(len(d.user_turns) for d in dialogues)
    for t in range(turns):
        live = [i for i, d in enumerate(dialogues) if t < len(d.user_turns)]
        for i in live:
            histories[i].append({"role": "user", "content": with_instruction(dialogues[i].instruction.text,
                                                                             dialogues[i].user_turns[t])})
        replies = answer([histories[i] for i in live])
        for i, reply in zip(live, replies):
            histories[i].append({"role": "assistant", "content": reply})
            answers[i].append(reply)
    return answers


def repair_answers(dialogue: GAttDialogue, answers: Sequence[str]) -> tuple[list[str], int]:
    """The sampled answers with those that break the instruction repaired by its own rules (a small model often
    ignores an instruction even when it is on every turn; the paper samples from a model that mostly follows it),
    and how many were edited. An answer no edit can fix is left empty, so it is not trained on."""
    out, edited = [], 0
    for reply in answers:
        if dialogue.instruction.followed(reply) or not reply.strip():  # an empty answer has nothing to repair
            out.append(reply)
            continue
        fixed = dialogue.instruction.repaired(reply)
        out.append(fixed or "")
        edited += 1
    return out, edited


def gatt_training_dialogues(dialogue: GAttDialogue, answers: Sequence[str]) -> list[list[Message]]:
    """Step 3: one dialogue per turn t: the instruction as the system message only, turns 1..t, loss on answer t
    only (encode with `train_on="last"`: tokens of earlier turns, answers included, get zero loss); an empty answer
    is not a sample."""
    messages: list[Message] = [{"role": "system", "content": dialogue.instruction.text}]
    out = []
    for user, reply in zip(dialogue.user_turns, answers):
        messages = [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        if reply.strip():
            out.append(messages)
    return out


def instruction_adherence(answer: AnswerFn, dialogues: Sequence[GAttDialogue],
                          turns: Sequence[int] = (2, 4, 6)) -> dict[int, float]:
    """Share of answers that follow the system instruction at each turn (Llama 2 Table 30).

    The instruction is given once, in the system message; the model continues from its own answers.
    """
    histories: list[list[Message]] = [[{"role": "system", "content": d.instruction.text}] for d in dialogues]
    followed: dict[int, float] = {}
    for t in range(1, max(turns) + 1):
        for h, d in zip(histories, dialogues):
            h.append({"role": "user", "content": d.user_turns[(t - 1) % len(d.user_turns)]})
        replies = answer(histories)
        for h, reply in zip(histories, replies):
            h.append({"role": "assistant", "content": reply})
        if t in turns:
            followed[t] = sum(d.instruction.followed(r) for d, r in zip(dialogues, replies)) / max(1, len(dialogues))
    return followed
