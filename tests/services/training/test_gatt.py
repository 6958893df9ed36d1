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
