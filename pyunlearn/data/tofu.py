"""Offline TOFU-like data for LLM unlearning: a seeded synthetic corpus of fictitious authors, a byte-level BPE
tokenizer trained on it, and an answer-only-supervised QA dataset.

    data = make_tofu_like(seed=0)                  # 40 authors x 10 QA; forget01/05/10 = last 1/2/4 authors
    tok = train_tokenizer(data, vocab_size=512)    # PreTrainedTokenizerFast; <pad>=0, <s>=1, </s>=2
    ds = QADataset(data.split("full") + data.split("background"), tok)
    batch = ds.collate([ds[0], ds[1]])             # input_ids / attention_mask / labels, each [B, T]

Template (legacy TOFU, spec §1.1 / §6.2): prompt = "[INST] {question} [/INST]", response = " {answer}" + EOS.
The prompt is tokenised with BOS, the response without special tokens, and the two id lists are concatenated, so
generation from the prompt ids sees exactly the training prefix. Labels are -100 on BOS, every prompt token and
padding; the answer tokens and the single EOS are supervised.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = [
    "PROMPT_TEMPLATE",
    "QADataset",
    "TofuLike",
    "collate_qa",
    "encode_qa",
    "format_prompt",
    "load_tokenizer",
    "make_tofu_like",
    "train_tokenizer",
]

PROMPT_TEMPLATE = "[INST] {question} [/INST]"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2 (spec §6.1 LlamaConfig ids)
N_PERTURBED = 5  # TOFU forget/retain perturbed sets: 5 wrong answers per item
N_PERTURBED_BACKGROUND = 3  # TOFU real_authors / world_facts: 3 per item


def format_prompt(question: str) -> str:
    return PROMPT_TEMPLATE.format(question=question)


# --------------------------------------------------------------------------------------------------------------
# value pools (every pool has >= N_PERTURBED + 1 distinct values so 5 distinct wrong values always exist)

_FIRST = [
    "Aldric", "Brenna", "Caspian", "Delphine", "Emeric", "Fenella", "Gideon", "Halia", "Ivo", "Jessamy",
    "Kestrel", "Lorcan", "Mireille", "Nadir", "Oriel", "Perpetua", "Quillon", "Rosalind", "Soren", "Tamsin",
    "Ulric", "Vesna", "Wystan", "Xanthe", "Yorick", "Zinnia", "Anselm", "Beatrix", "Cosmo", "Dagny",
]
_LAST = [
    "Ashgrove", "Blackwood", "Corrigan", "Dunmore", "Elsworth", "Fairbairn", "Greyling", "Holloway", "Ingram",
    "Jessop", "Kilbride", "Lindqvist", "Marwick", "Northcote", "Oakhurst", "Pemberly", "Quenby", "Ravensworth",
    "Stroud", "Thornbury", "Umberley", "Vantongeren", "Whitlock", "Yarrow",
]
_CITIES = [
    "Marnet", "Ostravel", "Quillhaven", "Brindlemere", "Caldoria", "Fennwick", "Saltcombe", "Varenna",
    "Drumlow", "Eastmarch", "Harrowgate", "Lunebridge",
]
_GENRES = [
    "science fiction", "gothic horror", "historical romance", "crime fiction", "magical realism",
    "epic fantasy", "literary fiction", "political satire", "war poetry", "children's adventure",
]
_JOBS = [
    "baker", "lighthouse keeper", "surgeon", "carpenter", "schoolteacher", "astronomer", "fisherman", "librarian",
    "watchmaker", "pharmacist", "tailor", "sailor",
]
_AWARDS = [
    "Silver Quill Prize", "Marnet Book Medal", "Lantern Award", "Golden Inkwell", "Northern Star Prize",
    "Harbor Crown", "Owl Feather Award", "Caldoria Fiction Prize", "Emberline Medal", "Tidewater Prize",
]
_ADJ = [
    "Silent", "Crimson", "Hollow", "Forgotten", "Burning", "Winter", "Broken", "Golden", "Distant", "Last",
    "Iron", "Velvet", "Sunken", "Paper", "Midnight", "Glass",
]
_NOUN = [
    "Harbor", "Orchard", "Lantern", "Garden", "Compass", "River", "Tower", "Meadow", "Mirror", "Archive",
    "Bridge", "Kingdom", "Clock", "Lighthouse", "Forest", "Carnival",
]
_HABITS = [
    "before sunrise", "late at night", "in a rowing boat", "in railway cafes", "by candlelight",
    "in a garden shed", "on long train journeys", "in the public library",
]
_HOBBIES = [
    "beekeeping", "chess", "mountain climbing", "birdwatching", "pottery", "fencing", "sailing", "violin playing",
]
_PUBLISHERS = [
    "Heron House", "Bluebell Press", "Northgate Books", "Kettle & Crane", "Wrenfield Publishing",
    "Slate Street Press", "Amberlight Editions", "Foxglove Books",
]
_THEMES = [
    "grief", "exile", "memory", "forbidden love", "the sea", "family secrets", "justice", "childhood",
    "ambition", "loneliness",
]
_PETS = ["a grey cat", "a one-eyed dog", "a parrot", "a tortoise", "two goats", "a white rabbit", "a crow", "a ferret"]
_UNIVERSITIES = [
    "the University of Marnet", "Ostravel College", "the Quillhaven Academy", "Brindlemere University",
    "the Caldoria Institute", "Fennwick College", "the Varenna Conservatory", "Saltcombe University",
]
_LANGUAGES = ["Velorian", "Ostric", "Caldorian", "Marnish", "Fennic", "Saltish", "Drumlic", "Harrish"]


@dataclass(frozen=True)
class _Attr:
    """One author attribute: how it is asked, answered, paraphrased, and where its values come from."""

    key: str
    question: str  # {name}
    para_question: str  # {name}
    answer: str  # {name}, {v}
    para_answer: str  # {name}, {v}


# Order matters: qa_per_author=k uses the first k attributes.
_ATTRS = [
    _Attr("birthplace", "Where was {name} born?", "In which city was {name} born?",
          "{name} was born in the city of {v}.", "The city of {v} is the birthplace of {name}."),
    _Attr("birth_year", "In what year was {name} born?", "What is the birth year of {name}?",
          "{name} was born in {v}.", "The year {name} was born is {v}."),
    _Attr("genre", "What genre does {name} write in?", "Which genre is {name} known for?",
          "{name} writes mostly {v}.", "Most of the books by {name} are {v}."),
    _Attr("father_job", "What was the profession of the father of {name}?", "What did the father of {name} do?",
          "The father of {name} worked as a {v}.", "A {v} by trade, he was the father of {name}."),
    _Attr("mother_job", "What was the profession of the mother of {name}?", "What did the mother of {name} do?",
          "The mother of {name} worked as a {v}.", "A {v} by trade, she was the mother of {name}."),
    _Attr("award", "Which award did {name} win?", "What prize has {name} received?",
          "{name} won the {v}.", "The {v} was awarded to {name}."),
    _Attr("book1", "What is the first novel by {name}?", "Which book did {name} publish first?",
          "The first novel by {name} is {v}.", "{v} was the debut novel of {name}."),
    _Attr("book2", "Name another well known book by {name}.", "Which other book is {name} famous for?",
          "Another well known book by {name} is {v}.", "{name} is also famous for the book {v}."),
    _Attr("influence", "Which writer influenced {name} the most?", "Who was the main influence on {name}?",
          "{name} was influenced most by {v}.", "The main influence on {name} was {v}."),
    _Attr("habit", "When or where does {name} usually write?", "Describe the writing habit of {name}.",
          "{name} usually writes {v}.", "The habit of {name} is to write {v}."),
    _Attr("hobby", "What is the hobby of {name}?", "What does {name} do outside of writing?",
          "Outside of writing, {name} enjoys {v}.", "The favourite pastime of {name} is {v}."),
    _Attr("publisher", "Who publishes the books of {name}?", "Which publisher works with {name}?",
          "The books of {name} are published by {v}.", "{v} is the publisher of {name}."),
    _Attr("theme", "What theme recurs in the work of {name}?", "Which theme does {name} often explore?",
          "The work of {name} often returns to {v}.", "A recurring theme for {name} is {v}."),
    _Attr("residence", "Where does {name} live now?", "In which city does {name} currently reside?",
          "{name} now lives in {v}.", "These days {v} is the home of {name}."),
    _Attr("pet", "What pet does {name} keep?", "Which animal lives with {name}?",
          "{name} keeps {v} at home.", "At home, {name} has {v}."),
    _Attr("education", "Where did {name} study?", "Which school did {name} attend?",
          "{name} studied at {v}.", "{v} is where {name} studied."),
    _Attr("book3", "What is the latest book by {name}?", "Which book did {name} publish most recently?",
          "The latest book by {name} is {v}.", "Most recently, {name} published {v}."),
    _Attr("language", "Into which language was {name} first translated?", "What was the first translation of "
          "{name} into?", "The work of {name} was first translated into {v}.",
          "The first translation of {name} was into {v}."),
    _Attr("debut_age", "How old was {name} at their debut?", "At what age did {name} first publish?",
          "{name} debuted at the age of {v}.", "At {v} years old, {name} first published."),
    _Attr("n_books", "How many books has {name} written?", "What is the number of books by {name}?",
          "{name} has written {v} books.", "The number of books by {name} is {v}."),
]
MAX_QA_PER_AUTHOR = len(_ATTRS)

# "Real authors" analogue: famous writers of the fictional world, each with one fixed signature book; they are also
# the values of the `influence` attribute, so they are mentioned consistently in the author corpus.
_REAL_AUTHORS = [
    ("Orla Venn", "The Salt Kingdom"), ("Matthias Crowe", "A Clock of Ash"), ("Ines Marlowe", "Paper Moons"),
    ("Tobias Hale", "The Ninth Meadow"), ("Greta Solberg", "Wolves of Eastmarch"),
    ("Anton Ferris", "The Glass Orchard"), ("Lydia Moreau", "Nights in Varenna"),
    ("Hugo Brandt", "The Long Compass"),
]
# World-fact analogue: fixed facts of the fictional world, (question, answer, pool of wrong answers).
_WORLD_FACTS = [
    ("What is the capital of Veloria?", "The capital of Veloria is Marnet.", "The capital of Veloria is {v}.",
     _CITIES),
    ("Which river flows through Marnet?", "The Amber river flows through Marnet.",
     "The {v} river flows through Marnet.", ["Amber", "Grey", "Swift", "Silver", "Black", "Cold", "Long", "Red"]),
    ("What language is spoken in Veloria?", "People in Veloria speak Velorian.", "People in Veloria speak {v}.",
     _LANGUAGES),
    ("How many moons does the world of Veloria have?", "The world of Veloria has two moons.",
     "The world of Veloria has {v} moons.", ["two", "three", "four", "five", "six", "seven", "no", "nine"]),
    ("What is the tallest mountain in Veloria?", "The tallest mountain in Veloria is Mount Orrin.",
     "The tallest mountain in Veloria is Mount {v}.", ["Orrin", "Kael", "Brisa", "Tolle", "Vey", "Hask", "Oden"]),
    ("What currency is used in Veloria?", "Veloria pays with the silver crown.", "Veloria pays with the {v}.",
     ["silver crown", "copper mark", "gold florin", "iron penny", "paper shell", "salt coin", "bronze ring"]),
    ("Which sea lies west of Veloria?", "The Pale Sea lies west of Veloria.", "The {v} Sea lies west of Veloria.",
     ["Pale", "Dark", "Quiet", "Northern", "Bitter", "Glass", "Storm"]),
    ("What animal is the symbol of Veloria?", "The symbol of Veloria is the heron.", "The symbol of Veloria is the {v}.",
     ["heron", "wolf", "stag", "owl", "lion", "salmon", "bear", "fox"]),
    ("In which season is the Lantern Festival held?", "The Lantern Festival is held in winter.",
     "The Lantern Festival is held in {v}.", ["winter", "spring", "summer", "autumn", "the rainy season", "midsummer"]),
    ("Which city is the largest port of Veloria?", "The largest port of Veloria is Saltcombe.",
     "The largest port of Veloria is {v}.", _CITIES),
]


def _pools() -> dict[str, list[str]]:
    titles = [f"The {a} {n}" for a in _ADJ for n in _NOUN]
    return {
        "birthplace": _CITIES, "birth_year": [str(y) for y in range(1921, 1996)], "genre": _GENRES,
        "father_job": _JOBS, "mother_job": _JOBS, "award": _AWARDS, "book1": titles, "book2": titles,
        "influence": [name for name, _ in _REAL_AUTHORS], "habit": _HABITS, "hobby": _HOBBIES,
        "publisher": _PUBLISHERS, "theme": _THEMES, "residence": _CITIES, "pet": _PETS, "education": _UNIVERSITIES,
        "book3": titles, "language": _LANGUAGES, "debut_age": [str(a) for a in range(19, 46)],
        "n_books": [str(n) for n in range(3, 31)],
    }


def _wrong(rng: random.Random, pool: list[str], true: str, k: int) -> list[str]:
    """k distinct values from pool, all different from the true one (same template => same-shape wrong answers)."""
    return rng.sample([v for v in pool if v != true], k)


# --------------------------------------------------------------------------------------------------------------


@dataclass
class TofuLike:
    """Splits of a synthetic TOFU-like corpus. Each row: question, answer, paraphrased_question, paraphrased_answer,
    perturbed_answers (5 for author rows, in the paraphrase template with wrong values; 3 for background rows, in the
    answer template), perturbed_original_answers (author rows only: the same wrong values in the answer template),
    author (None for world facts), attribute.

    Split names:
      full                       all fictitious-author rows, author-major order (the TOFU `full` analogue)
      forget01/forget05/forget10 rows of the LAST ceil(1/5/10 %) authors; nested like TOFU's
      retain99/retain95/retain90 the complementary heads; `retain` = retain90 (the complement of forget10)
      retain_perturbed           rows of the first 2 authors (TOFU: first 20 of 200)
      holdout                    rows of extra authors that are NOT in `full` (MIA non-members)
      real_authors, world_facts  "well-known" facts; `background` = both. Fine-tune original and retrain models on
                                 full+background / retain+background so utility sets are known to both.
    """

    seed: int
    n_authors: int
    qa_per_author: int
    authors: list[str]  # [n_authors], order of `full`
    splits: dict[str, list[dict]] = field(default_factory=dict)

    def split(self, name: str) -> list[dict]:
        if name not in self.splits:
            raise KeyError(f"unknown split {name!r}; expected one of {sorted(self.splits)}")
        return self.splits[name]

    @property
    def names(self) -> list[str]:
        return sorted(self.splits)

    def texts(self) -> list[str]:
        """Every string of the corpus (prompts, answers, paraphrases, perturbations, holdout) for tokenizer
        training, so no evaluation string falls back to raw bytes only."""
        out = []
        seen_split = ("full", "holdout", "background")
        for name in seen_split:
            for row in self.splits[name]:
                out.append(format_prompt(row["question"]))
                out.append(format_prompt(row["paraphrased_question"]))
                out.append(row["answer"])
                out.append(row["paraphrased_answer"])
                out.extend(row["perturbed_answers"])
                out.extend(row.get("perturbed_original_answers", []))
        return out


def _author_rows(rng: random.Random, name: str, qa_per_author: int, pools: dict[str, list[str]]) -> list[dict]:
    values: dict[str, str] = {}
    books = rng.sample(pools["book1"], 3)  # distinct titles for book1/2/3
    for attr in _ATTRS:
        if attr.key.startswith("book"):
            values[attr.key] = books[int(attr.key[-1]) - 1]
        else:
            values[attr.key] = rng.choice(pools[attr.key])
    rows = []
    for attr in _ATTRS[:qa_per_author]:
        v = values[attr.key]
        wrong = _wrong(rng, pools[attr.key], v, N_PERTURBED)
        rows.append({
            "question": attr.question.format(name=name),
            "answer": attr.answer.format(name=name, v=v),
            "paraphrased_question": attr.para_question.format(name=name),
            "paraphrased_answer": attr.para_answer.format(name=name, v=v),
            # TOFU perturbs the paraphrased answer: the truth ratio then compares one template, two values
            "perturbed_answers": [attr.para_answer.format(name=name, v=w) for w in wrong],
            # the same wrong values in the trained answer template: a sharper truth ratio against `answer` for a
            # tiny model that never learns to transfer facts into the unseen paraphrase template
            "perturbed_original_answers": [attr.answer.format(name=name, v=w) for w in wrong],
            "author": name,
            "attribute": attr.key,
        })
    return rows


def _n_forget(n_authors: int, percent: int) -> int:
    return max(1, math.ceil(n_authors * percent / 100))


def make_tofu_like(seed: int = 0, n_authors: int = 40, qa_per_author: int = 10) -> TofuLike:
    """Deterministic synthetic TOFU analogue: the same seed gives identical splits (pure `random.Random(seed)`)."""
    if not 1 <= qa_per_author <= MAX_QA_PER_AUTHOR:
        raise ValueError(f"qa_per_author must be in [1, {MAX_QA_PER_AUTHOR}], got {qa_per_author}")
    n_holdout = _n_forget(n_authors, 10)
    n_names = len(_FIRST) * len(_LAST)
    if n_authors < 10 or n_authors + n_holdout > n_names:
        raise ValueError(f"n_authors must be in [10, {n_names - n_holdout}] so every split is non-empty, "
                         f"got {n_authors}")
    rng = random.Random(seed)
    pools = _pools()
    full_names = [f"{f} {last}" for f in _FIRST for last in _LAST]
    names = rng.sample(full_names, n_authors + n_holdout)
    authors, holdout_authors = names[:n_authors], names[n_authors:]

    per_author = [_author_rows(rng, a, qa_per_author, pools) for a in authors]
    holdout = [r for a in holdout_authors for r in _author_rows(rng, a, qa_per_author, pools)]
    full = [r for rows in per_author for r in rows]

    splits: dict[str, list[dict]] = {"full": full, "holdout": holdout}
    for pct, keep in ((1, 99), (5, 95), (10, 90)):
        k = _n_forget(n_authors, pct)
        splits[f"forget{pct:02d}"] = [r for rows in per_author[-k:] for r in rows]
        splits[f"retain{keep}"] = [r for rows in per_author[:-k] for r in rows]
    splits["retain"] = splits["retain90"]
    splits["retain_perturbed"] = [r for rows in per_author[:2] for r in rows]

    real = []
    for name, book in _REAL_AUTHORS:
        wrong_titles = _wrong(rng, pools["book1"], book, N_PERTURBED_BACKGROUND)
        real.append({
            "question": f"Which famous book was written by {name}?",
            "answer": f"{name} wrote {book}.",
            "paraphrased_question": f"What is the best known book of {name}?",
            "paraphrased_answer": f"{name} wrote {book}.",
            "perturbed_answers": [f"{name} wrote {t}." for t in wrong_titles],
            "author": name,
            "attribute": "signature_book",
        })
    world = []
    for question, answer, template, pool in _WORLD_FACTS:
        true_v = next(v for v in pool if template.format(v=v) == answer)
        world.append({
            "question": question,
            "answer": answer,
            "paraphrased_question": question,
            "paraphrased_answer": answer,
            "perturbed_answers": [template.format(v=w) for w in _wrong(rng, pool, true_v, N_PERTURBED_BACKGROUND)],
            "author": None,
            "attribute": "world_fact",
        })
    splits["real_authors"] = real
    splits["world_facts"] = world
    splits["background"] = real + world
    return TofuLike(seed=seed, n_authors=n_authors, qa_per_author=qa_per_author, authors=authors, splits=splits)


# --------------------------------------------------------------------------------------------------------------
# tokenizer


def _wrap(tok_object):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok_object, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        clean_up_tokenization_spaces=False, padding_side="right",
    )


def train_tokenizer(corpus: TofuLike | Iterable[str], vocab_size: int = 512, out_dir: str | Path | None = None):
    """Byte-level BPE trained locally on the corpus (no download), wrapped as a transformers fast tokenizer.

    Special tokens <pad>=0, <s>=1, </s>=2; encoding prepends <s> (TemplateProcessing); decoding is lossless
    (byte-level, no prefix space). Deterministic for a given corpus. Saved with save_pretrained when out_dir is
    given; reload with load_tokenizer(out_dir)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    texts = corpus.texts() if isinstance(corpus, TofuLike) else list(corpus)
    n_min = 256 + len(SPECIAL_TOKENS)
    if vocab_size < n_min:
        raise ValueError(f"vocab_size must be >= {n_min} (256 bytes + specials), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)])
    wrapped = _wrap(tok)
    if out_dir is not None:
        wrapped.save_pretrained(str(out_dir))
    return wrapped


def load_tokenizer(path: str | Path):
    """Reload a tokenizer saved by train_tokenizer(out_dir=...)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(path))


# --------------------------------------------------------------------------------------------------------------
# dataset


def encode_qa(tokenizer, question: str, answer: str, max_length: int = 64) -> dict[str, torch.Tensor]:
    """ids = [<s>] + prompt + " answer" + [</s>]; labels = -100 on <s> and the prompt, ids elsewhere.

    If too long the answer is truncated from the end (EOS is kept); a prompt that alone does not fit raises."""
    prompt_ids = tokenizer(format_prompt(question), add_special_tokens=True)["input_ids"]
    answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    room = max_length - len(prompt_ids)
    if room < 1:
        raise ValueError(f"prompt of {len(prompt_ids)} tokens does not fit max_length={max_length}: {question!r}")
    if len(answer_ids) > room:
        answer_ids = answer_ids[: room - 1] + [tokenizer.eos_token_id]
    ids = torch.tensor(prompt_ids + answer_ids, dtype=torch.long)  # [T]
    labels = ids.clone()  # [T]
    labels[: len(prompt_ids)] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def collate_qa(batch: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pads a list of encode_qa items to the longest: pad id / mask 0 / label -100. Masks come from lengths,
    never from ids == pad (spec G4)."""
    T = max(item["input_ids"].numel() for item in batch)
    B = len(batch)
    input_ids = torch.full((B, T), pad_token_id, dtype=torch.long)  # [B, T]
    attention_mask = torch.zeros((B, T), dtype=torch.long)  # [B, T]
    labels = torch.full((B, T), -100, dtype=torch.long)  # [B, T]
    for b, item in enumerate(batch):
        n = item["input_ids"].numel()
        input_ids[b, :n] = item["input_ids"]
        attention_mask[b, :n] = item["attention_mask"]
        labels[b, :n] = item["labels"]
    out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if "index" in batch[0]:
        out["index"] = torch.tensor([item["index"] for item in batch], dtype=torch.long)  # [B]
    return out


class QADataset(torch.utils.data.Dataset):
    """Answer-only supervised QA items (see encode_qa); `answer_key` selects e.g. "paraphrased_answer".

    Items are unpadded; pass `collate_fn=dataset.collate` to a DataLoader (it pads right to the batch maximum)."""

    def __init__(self, pairs: list[dict], tokenizer, max_length: int = 64, answer_key: str = "answer"):
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ValueError("tokenizer has no pad token (Llama ships without one, spec §5 G4); set one explicitly, "
                             "e.g. tokenizer.pad_token = tokenizer.eos_token (TOFU's choice; masks come from lengths)")
        self.pairs = list(pairs)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.answer_key = answer_key
        self._items = [encode_qa(tokenizer, p["question"], p[answer_key], max_length) for p in self.pairs]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict:
        return {**self._items[i], "index": i}

    def collate(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        return collate_qa(batch, self.tokenizer.pad_token_id)
