"""Ghost Attention: instruction appended at sampling time, kept only in the first turn for training, loss on the last answer."""
import random

from alignline.services.models import IGNORE_INDEX, encode_dialogue
from alignline.services.training import (CONSTRAINTS, GAttDialogue, Instruction, gatt_training_dialogues, ghost_attention_dialogues,
                                         instruction_adherence, sample_gatt_answers, sample_instruction)

USER_TURNS = ["What does json.dumps do?", "And json.loads?", "Which is faster?", "Thanks!"]


def test_instructions_combine_and_shorten_at_random():
    rng = random.Random(0)
    instructions = [sample_instruction(rng) for _ in range(200)]
    assert any(len(i.constraints) == 2 for i in instructions) and any(len(i.constraints) == 1 for i in instructions)
    assert all(len({c.kind for c in i.constraints}) == len(i.constraints) for i in instructions)
    texts = {i.text for i in instructions}
    assert any(c.short in t for c in CONSTRAINTS for t in texts) and any(c.long in t for c in CONSTRAINTS for t in texts)
    assert {c.kind for i in instructions for c in i.constraints} == {"act_as", "style", "topic"}


def test_sampling_appends_the_instruction_to_every_user_turn_and_training_keeps_it_only_first():
    dialogues = ghost_attention_dialogues(USER_TURNS, n=3, turns=3, seed=1)
    seen = []

    def answer(batch):
        seen.append([list(h) for h in batch])  # batch i holds dialogue i's history at this turn
        return [f"reply {(len(b) + 1) // 2}" for b in batch]

    answers = sample_gatt_answers(answer, dialogues)
    assert answers[0] == ["reply 1", "reply 2", "reply 3"] and len(seen) == 3
    for turn in seen:  # every user turn the policy saw carried the instruction
        for d, history in zip(dialogues, turn):
            users = [m["content"] for m in history if m["role"] == "user"]
            assert all(u.endswith(d.instruction.text) for u in users)
            assert [u.removesuffix(d.instruction.text).strip() for u in users] == list(d.user_turns[:len(users)])

    samples = gatt_training_dialogues(dialogues[0], answers[0])
    assert len(samples) == 3  # one per turn
    last = samples[-1]
    assert last[0] == {"role": "system", "content": dialogues[0].instruction.text}
    assert all(dialogues[0].instruction.text not in m["content"] for m in last[1:])


def test_loss_is_zero_on_every_token_of_earlier_turns(tokenizer):
    dialogue = ghost_attention_dialogues(USER_TURNS, n=1, turns=3, seed=2)[0]
    sample = gatt_training_dialogues(dialogue, ["first answer", "second answer", "third answer"])[-1]
    encoded = encode_dialogue(tokenizer, sample, train_on="last")
    trained = [t for t, y in zip(encoded.input_ids, encoded.labels) if y != IGNORE_INDEX]
    assert tokenizer.decode(trained, skip_special_tokens=True).strip() == "third answer"
    # the trained span is one contiguous run at the end: nothing of turns 1-2 carries loss
    first = next(i for i, y in enumerate(encoded.labels) if y != IGNORE_INDEX)
    assert all(y != IGNORE_INDEX for y in encoded.labels[first:])


def test_instruction_adherence_at_turns_2_4_6():
    pirate = Instruction("Act as a pirate: start every answer with 'Ahoy'.", (CONSTRAINTS[0],))
    dialogues = [GAttDialogue(pirate, tuple(USER_TURNS[:3])) for _ in range(2)]
    seen_system = []

    def forgetful(batch):
        # Follows the system instruction only while the dialogue is short (the failure GAtt fixes, Fig. 9).
        seen_system.extend(b[0]["content"] for b in batch)
        return ["Ahoy, json.dumps writes JSON." if len(b) <= 4 else "json.loads reads JSON." for b in batch]

    assert instruction_adherence(forgetful, dialogues, turns=(2, 4, 6)) == {2: 1.0, 4: 0.0, 6: 0.0}
    assert set(seen_system) == {pirate.text}  # the instruction is given once, as the system message


def test_constraint_checks():
    checks = {c.long: c.check for c in CONSTRAINTS}
    assert checks["Act as a radio operator: end every answer with 'Over'."]("Copy that. Over.")
    assert checks["Always answer in capital letters only."]("YES, USE JSON.")
    assert not checks["Always answer in at most ten words."]("one two three four five six seven eight nine ten eleven")
    assert not checks["Never mention the word 'file' in your answers."]("Open the File first.")


def test_every_constraint_repairs_an_answer_that_breaks_it():
    answer = "The weather is fine; open the file with open() and read it line by line, then close it when done reading."
    for c in CONSTRAINTS:
        fixed = Instruction(c.short, (c,)).repaired(answer)
        assert fixed is not None and c.check(fixed), (c.long, fixed)
    assert Instruction("x", (CONSTRAINTS[0],)).repaired("Ahoy, matey.") == "Ahoy, matey."  # already follows


def test_combined_instructions_are_repaired_together_or_dropped():
    by_long = {c.long: c for c in CONSTRAINTS}
    pirate, capitals, ten = (by_long["Act as a pirate: start every answer with 'Ahoy'."],
                             by_long["Always answer in capital letters only."], by_long["Always answer in at most ten words."])
    radio, done = by_long["Act as a radio operator: end every answer with 'Over'."], by_long["Always end your answer with the word 'Done'."]
    long_answer = " ".join(["word"] * 30)
    for pair in [(pirate, capitals), (pirate, ten), (radio, ten), (ten, capitals)]:
        fixed = Instruction("x", pair).repaired(long_answer)
        assert fixed is not None and Instruction("x", pair).followed(fixed), (pair, fixed)
    assert Instruction("x", (radio, done)).repaired("Sure thing.") is None  # two last words cannot both hold


def test_repair_answers_counts_edits_and_empties_what_cannot_be_fixed():
    from alignline.services.training import repair_answers

    by_long = {c.long: c for c in CONSTRAINTS}
    pirate = by_long["Act as a pirate: start every answer with 'Ahoy'."]
    dialogue = GAttDialogue(Instruction("Pirate: start with 'Ahoy'.", (pirate,)), ("a", "b", "c"))
    fixed, edited = repair_answers(dialogue, ["Ahoy, yes.", "No.", ""])
    assert fixed == ["Ahoy, yes.", "Ahoy, No.", ""] and edited == 1
    samples = gatt_training_dialogues(dialogue, fixed)
    assert [s[-1]["content"] for s in samples] == ["Ahoy, yes.", "Ahoy, No."]
