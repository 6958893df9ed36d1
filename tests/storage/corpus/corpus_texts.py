import random


_WORDS = ("river mountain garden library window teacher village harvest winter summer morning evening letter "
          "market bridge forest station kitchen journey question answer history science music painting doctor "
          "student farmer captain island ocean valley castle engine machine language message picture pocket "
          "shadow silver thunder traveler wagon yellow orange purple quietly slowly carefully brightly").split()
_GLUE = ["the", "of", "and", "to", "with", "that", "from", "near", "under", "over", "before", "after"]
_VERBS = ["walked", "carried", "found", "opened", "watched", "painted", "remembered", "described", "followed", "built"]


def prose(seed: int, sentences: int = 12) -> str:
    """Deterministic English-like prose that passes the Gopher, repetition and C4 rules."""
    rng = random.Random(seed)
    out = []
    for _ in range(sentences):
        words = ["The", rng.choice(_WORDS), rng.choice(_VERBS), "the", rng.choice(_WORDS), rng.choice(_GLUE),
                 "the", rng.choice(_WORDS), "and", "the", rng.choice(_WORDS), rng.choice(_VERBS), "with",
                 rng.choice(_WORDS), rng.choice(_WORDS)]
        out.append(" ".join(words) + ".")
    return " ".join(out)


