"""A seeded generator of LoCoMo-like conversations whose facts change over time.

Why: LoCoMo has ten conversations, too few to train on and too long to test
with. This generator writes small multi-session chats between two speakers in
which facts *change*: people move, change jobs, break up, adopt a second pet,
go off a favourite food, mention dated events in relative terms ("last
Saturday", "two days ago"), and now and then repeat something already said. The gold answers resolve those dates against the
session date. Besides questions of every LoCoMo category (1 multi-hop,
2 temporal, 3 open-domain, 4 single-hop, 5 adversarial), it asks "what is X
now" questions, tagged ``"current"``, that only a memory which UPDATEs and
DELETEs (instead of piling up ADDs) answers right; ``"history"`` questions ask
for the state before a change, so deleting too eagerly is also caught. "Now"
questions name the values a change superseded (``QA.superseded_values``) and
the ones that replaced them (``QA.current_values``).

Every fact-bearing turn also carries its gold memory edits
(``Conversation.edits``): ADD a new fact, UPDATE the memory a move, a new job
or a changed taste supersedes, DELETE the relationship a break-up ends (and
ADD the break-up), NOOP a repeated fact. Those are the Memory Manager's
supervised targets and the yardstick of its UPDATE/DELETE recall.

Same seed -> identical conversation (one ``random.Random(seed)``; no global
state, no clock). Used by ``memory-agent demo``, the tests, and as extra
training data (:func:`generate_dataset`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from data.dates import display_day
from data.schema import NOT_MENTIONED, QA, Conversation, MemoryEdit, Session, Turn

__all__ = ["generate", "generate_dataset", "CITIES", "format_date"]

NAMES = [
    "Alice", "Bruno", "Chloe", "Daniel", "Elena", "Farid", "Grace", "Hugo", "Irene", "Jonas",
    "Keiko", "Liam", "Maya", "Nikhil", "Olivia", "Pablo", "Rosa", "Samir", "Tara", "Victor",
]
PARTNERS = ["Sam", "Jordan", "Alex", "Robin", "Casey", "Morgan", "Jamie", "Taylor"]
#: city -> country: the open-domain questions need this bit of world knowledge.
CITIES: dict[str, str] = {
    "Lisbon": "Portugal", "Denver": "the United States", "Lyon": "France", "Osaka": "Japan",
    "Toronto": "Canada", "Edinburgh": "Scotland", "Melbourne": "Australia", "Munich": "Germany",
    "Valencia": "Spain", "Seattle": "the United States", "Bologna": "Italy", "Utrecht": "the Netherlands",
}
JOBS = [
    "nurse", "software engineer", "chef", "teacher", "graphic designer", "accountant",
    "photographer", "pharmacist", "carpenter", "librarian", "architect", "physiotherapist",
]
PETS = ["dog", "cat", "rabbit", "parrot", "hamster", "tortoise"]
PET_NAMES = ["Biscuit", "Luna", "Milo", "Pepper", "Ziggy", "Olive", "Rex", "Mochi", "Toffee", "Nala"]
FOODS = ["sushi", "pizza", "tacos", "ramen", "curry", "burgers", "pasta", "dumplings"]
HOBBIES = ["rock climbing", "pottery", "chess", "salsa dancing", "birdwatching", "baking bread", "surfing", "knitting"]
# (first-person past, question form)
EVENTS = [
    ("ran a half marathon", "run a half marathon"),
    ("went to a jazz concert", "go to a jazz concert"),
    ("went to a wedding in the countryside", "go to a wedding in the countryside"),
    ("went camping by a lake", "go camping by a lake"),
    ("repainted the kitchen", "repaint the kitchen"),
    ("rented a vegetable garden plot", "rent a vegetable garden plot"),
    ("took a cooking class", "take a cooking class"),
    ("volunteered at a food bank", "volunteer at a food bank"),
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
FILLERS = [
    "Work has been busy, but I'm hanging in there.",
    "I've been reading a lot in the evenings.",
    "The weather has been lovely lately.",
    "I finally caught up on sleep this week.",
]


def format_date(day: datetime) -> str:
    """``8 May 2023``: the form of the gold answers."""
    return display_day(day)


def _an(noun: str) -> str:
    """``"an accountant"``, ``"a nurse"``."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _locomo_datetime(when: datetime) -> str:
    hour = when.hour % 12 or 12
    return f"{hour}:{when:%M} {'am' if when.hour < 12 else 'pm'} on {when.day} {when:%B}, {when.year}"


def _relative(rng: random.Random, session_day: datetime) -> tuple[str, datetime]:
    """A relative phrase and the day it denotes, seen from ``session_day``."""
    kind = rng.choice(["yesterday", "ago", "weekday", "weekday"])
    if kind == "yesterday":
        return "yesterday", session_day - timedelta(days=1)
    if kind == "ago":
        n = rng.choice([2, 3])
        return f"{'two' if n == 2 else 'three'} days ago", session_day - timedelta(days=n)
    target = rng.choice([4, 5, 6])  # Friday, Saturday, Sunday
    back = (session_day.weekday() - target) % 7 or 7  # strictly before the session day
    return f"last {WEEKDAYS[target]}", session_day - timedelta(days=back)


@dataclass
class _Step:
    """One fact-bearing utterance; ``when`` is resolved once its session is known."""

    owner: str  # "a" or "b"
    key: str
    order: int = 0  # 0 = introduces a fact, 1 = changes it (must come later)
    dated: bool = False
    mood: str = "good"
    session: int = 0
    dia_id: str = ""
    text: str = ""
    fact: str = ""
    day: datetime | None = None


@dataclass
class _World:
    a: str
    b: str
    city1: str
    city2: str
    job1: str
    job2: str
    pet1: tuple[str, str]
    pet2: tuple[str, str]
    partner: str
    food1: str
    food2: str
    hobby_b: str
    event_a: tuple[str, str]
    event_b: tuple[str, str]
    steps: dict[str, _Step] = field(default_factory=dict)


def _make_world(rng: random.Random) -> _World:
    a, b = rng.sample(NAMES, 2)
    city1, city2 = rng.sample(sorted(CITIES), 2)
    job1, job2 = rng.sample(JOBS, 2)
    kinds, names = rng.sample(PETS, 2), rng.sample(PET_NAMES, 2)
    food1, food2 = rng.sample(FOODS, 2)
    event_a, event_b = rng.sample(EVENTS, 2)
    return _World(
        a=a, b=b, city1=city1, city2=city2, job1=job1, job2=job2,
        pet1=(kinds[0], names[0]), pet2=(kinds[1], names[1]), partner=rng.choice(PARTNERS),
        food1=food1, food2=food2, hobby_b=rng.choice(HOBBIES), event_a=event_a, event_b=event_b,
    )


def _plan(rng: random.Random) -> list[_Step]:
    intros = [
        _Step("a", "city1"), _Step("a", "job1"), _Step("a", "pet1"), _Step("a", "partner"),
        _Step("a", "food1"), _Step("b", "hobby_b"),
    ]
    changes = [
        _Step("a", "city2", 1, dated=True), _Step("a", "job2", 1, dated=True), _Step("a", "pet2", 1),
        _Step("a", "breakup", 1, mood="bad"), _Step("a", "food2", 1),
        _Step("a", "event_a", dated=True), _Step("b", "event_b", dated=True),
        _Step("a", "repeat_pet1", 1), _Step("b", "repeat_hobby", 1),
    ]
    rng.shuffle(intros)
    rng.shuffle(changes)
    return intros + changes


def _schedule(steps: list[_Step], n_sessions: int) -> None:
    """Spread steps over sessions in order; a change lands after its introduction."""
    per = -(-len(steps) // n_sessions)
    intro_session: dict[str, int] = {}
    parents = {"city2": "city1", "job2": "job1", "pet2": "pet1", "breakup": "partner", "food2": "food1",
               "repeat_pet1": "pet1", "repeat_hobby": "hobby_b"}
    for i, step in enumerate(steps):
        step.session = min(i // per, n_sessions - 1)
        parent = parents.get(step.key)
        if parent is not None and n_sessions > 1:
            step.session = max(step.session, min(intro_session[parent] + 1, n_sessions - 1))
        intro_session[step.key] = step.session


def _say(rng: random.Random, w: _World, step: _Step, day: datetime) -> None:
    """Fill in the utterance, the observed fact and the event day of ``step``."""
    rel, when = _relative(rng, day)
    a = w.a
    k = step.key
    if k == "city1":
        step.text = rng.choice([f"I've been living in {w.city1} for a few years now.", f"Life in {w.city1} is good, I love my neighbourhood."])
        step.fact = f"{a} lives in {w.city1}."
    elif k == "city2":
        step.text = f"Big news: I moved from {w.city1} to {w.city2} {rel}!"
        step.fact, step.day = f"{a} moved from {w.city1} to {w.city2}.", when
    elif k == "job1":
        step.text = rng.choice([f"I work as {_an(w.job1)}, and it keeps me busy.", f"Being {_an(w.job1)} is tiring but I like it."])
        step.fact = f"{a} works as {_an(w.job1)}."
    elif k == "job2":
        step.text = f"I quit being {_an(w.job1)}. I started my new job as {_an(w.job2)} {rel}."
        step.fact, step.day = f"{a} quit being {_an(w.job1)} and now works as {_an(w.job2)}.", when
    elif k == "pet1":
        kind, name = w.pet1
        step.text = f"My {kind} {name} keeps me company at home."
        step.fact = f"{a} has a {kind} named {name}."
    elif k == "pet2":
        kind, name = w.pet2
        step.text = f"We adopted a {kind} named {name}! {w.pet1[1]} is getting used to the new friend."
        step.fact = f"{a} adopted a {kind} named {name}, and still has {w.pet1[1]}."
    elif k == "partner":
        step.text = f"I've been dating {w.partner} for a while, it's going really well."
        step.fact = f"{a} is dating {w.partner}."
    elif k == "breakup":
        step.text = f"{w.partner} and I broke up. It was hard, but it was the right call."
        step.fact = f"{a} and {w.partner} broke up; {a} is single."
    elif k == "food1":
        step.text = f"I could eat {w.food1} every day, it's my favourite food."
        step.fact = f"{a}'s favourite food is {w.food1}."
    elif k == "food2":
        step.text = f"Funny thing, I've gone off {w.food1}. These days I'm all about {w.food2}."
        step.fact = f"{a} no longer likes {w.food1}; {a}'s favourite food is now {w.food2}."
    elif k == "hobby_b":
        step.text = f"I took up {w.hobby_b} recently and I'm hooked."
        step.fact = f"{w.b} took up {w.hobby_b}."
    elif k == "repeat_pet1":  # said again: a perfect manager does nothing (NOOP)
        kind, name = w.pet1
        step.text = f"{name} says hi, by the way. My {kind} is still my best buddy."
        step.fact = f"{a} has a {kind} named {name}."
    elif k == "repeat_hobby":
        step.text = f"I'm still hooked on {w.hobby_b}, I go every weekend."
        step.fact = f"{w.b} took up {w.hobby_b}."
    elif k in ("event_a", "event_b"):
        past, _ = w.event_a if k == "event_a" else w.event_b
        who = a if k == "event_a" else w.b
        step.text = f"I {past} {rel}, it was great."
        step.fact, step.day = f"{who} {past}.", when
    else:  # pragma: no cover - the plan only holds the keys above
        raise AssertionError(k)


_GOOD = ["That's great!", "Wow, good for you!", "Love that.", "How exciting!"]
_REPLY = ["Doing well, thanks! What's new with you?", "Pretty good! Any news?", "All good here. How about you?"]
_HELLO = ["Good to hear from you!", "Hey! Doing well.", "Hi! All good here."]
_BAD = ["Oh no, I'm sorry.", "That sounds tough.", "Sorry to hear that."]


def _dialogue(rng: random.Random, w: _World, steps: list[_Step], n_sessions: int, start: datetime) -> list[Session]:
    sessions: list[Session] = []
    day = start
    for s in range(n_sessions):
        if s:
            day = (day + timedelta(days=rng.randint(8, 21))).replace(hour=rng.randint(8, 21), minute=rng.randint(0, 59))
        in_session = [st for st in steps if st.session == s]
        name = {"a": w.a, "b": w.b}
        opener = rng.choice("ab")
        other = "b" if opener == "a" else "a"
        lines: list[tuple[str, str, _Step | None]] = [
            (opener, rng.choice([f"Hi {name[other]}! How have you been?", f"Hey {name[other]}, long time no see!"]), None),
        ]
        if not in_session:
            lines.append((other, rng.choice(FILLERS), None))
        for step in in_session:
            _say(rng, w, step, day)
            last_owner, _, last_step = lines[-1]
            if last_owner == step.owner:  # the other speaker reacts, so turns alternate
                if len(lines) == 1:  # answering the greeting
                    react = rng.choice(_REPLY)
                else:
                    react = rng.choice(_BAD if last_step and last_step.mood == "bad" else _GOOD)
                lines.append(("b" if step.owner == "a" else "a", react, None))
            elif last_step is not None:  # react to the other's news, then give ours
                react = rng.choice(_BAD if last_step.mood == "bad" else _GOOD)
                step.text = f"{react} {step.text}"
            elif len(lines) == 1:
                step.text = f"{rng.choice(_HELLO)} {step.text}"
            lines.append((step.owner, step.text, step))
        last_owner = lines[-1][0]
        lines.append(("b" if last_owner == "a" else "a", rng.choice(["Talk soon!", "Let's catch up again soon.", "Take care!"]), None))
        turns = []
        for i, (owner, text, step) in enumerate(lines, start=1):
            dia_id = f"D{s + 1}:{i}"
            if step is not None:
                step.dia_id = dia_id
                w.steps[step.key] = step
            turns.append(Turn(dia_id=dia_id, speaker=name[owner], text=text))
        sessions.append(Session(index=s + 1, date_time=_locomo_datetime(day), timestamp=day.isoformat(), turns=tuple(turns)))
    return sessions


def _questions(w: _World) -> list[QA]:
    st = w.steps
    a, b = w.a, w.b

    def ev(*keys: str) -> tuple[str, ...]:
        return tuple(st[k].dia_id for k in keys)

    def date(key: str) -> str:
        return format_date(st[key].day)

    (k1, n1), (k2, n2) = w.pet1, w.pet2
    ea_q, eb_q = w.event_a[1], w.event_b[1]
    moved = {"superseded_values": (w.city1,), "current_values": (w.city2,)}
    return [
        QA(question=f"What pets does {a} have?", answer=f"a {k1} named {n1}, a {k2} named {n2}", evidence=ev("pet1", "pet2"), category=1, tags=("current",)),
        QA(question=f"Which cities has {a} lived in?", answer=f"{w.city1}, {w.city2}", evidence=ev("city1", "city2"), category=1, tags=("history",)),
        QA(question=f"Which jobs has {a} had?", answer=f"{w.job1}, {w.job2}", evidence=ev("job1", "job2"), category=1, tags=("history",)),
        QA(question=f"When did {a} move to {w.city2}?", answer=date("city2"), evidence=ev("city2"), category=2),
        QA(question=f"When did {a} start working as {_an(w.job2)}?", answer=date("job2"), evidence=ev("job2"), category=2),
        QA(question=f"When did {a} {ea_q}?", answer=date("event_a"), evidence=ev("event_a"), category=2),
        QA(question=f"When did {b} {eb_q}?", answer=date("event_b"), evidence=ev("event_b"), category=2),
        QA(question=f"Which country does {a} live in now?", answer=CITIES[w.city2].removeprefix("the "), evidence=ev("city2"), category=3, tags=("current",), **moved),
        QA(question=f"Would {a} be considered an animal lover?", answer=f"Yes, {a} has a {k1} and a {k2}", evidence=ev("pet1", "pet2"), category=3),
        QA(question=f"Where does {a} live now?", answer=w.city2, evidence=ev("city2"), category=4, tags=("current",), **moved),
        QA(question=f"What is {a}'s job now?", answer=w.job2, evidence=ev("job2"), category=4, tags=("current",),
           superseded_values=(w.job1,), current_values=(w.job2,)),
        QA(question=f"Is {a} still dating {w.partner}?", answer=f"No, {a} and {w.partner} broke up", evidence=ev("breakup"), category=4, tags=("current",),
           superseded_values=("dating",), current_values=("broke up",)),
        QA(question=f"What is {a}'s favourite food now?", answer=w.food2, evidence=ev("food2"), category=4, tags=("current",),
           superseded_values=(w.food1,), current_values=(w.food2,)),
        QA(question=f"What was {a}'s job before becoming {_an(w.job2)}?", answer=w.job1, evidence=ev("job1"), category=4, tags=("history",)),
        QA(question=f"What hobby did {b} take up?", answer=w.hobby_b, evidence=ev("hobby_b"), category=4),
        QA(question=f"When did {b} move to {w.city2}?", answer=NOT_MENTIONED, evidence=ev("city2"), category=5, adversarial_answer=date("city2")),
        QA(question=f"What is the name of {b}'s {k1}?", answer=NOT_MENTIONED, evidence=ev("pet1"), category=5, adversarial_answer=n1),
    ]


#: change key -> (gold op on the earlier memory, the key whose memory it concerns)
_SUPERSEDES = {"city2": ("UPDATE", "city1"), "job2": ("UPDATE", "job1"), "food2": ("UPDATE", "food1"),
               "breakup": ("DELETE", "partner"), "repeat_pet1": ("NOOP", "pet1"),
               "repeat_hobby": ("NOOP", "hobby_b")}


def _edits(w: _World) -> dict[str, tuple[MemoryEdit, ...]]:
    """The gold memory edits of every fact-bearing turn (see the module docstring)."""
    out: dict[str, tuple[MemoryEdit, ...]] = {}
    for key, st in w.steps.items():
        op, parent = _SUPERSEDES.get(key, ("ADD", None))
        target = w.steps[parent].dia_id if parent else None
        if op == "UPDATE":
            edits = (MemoryEdit(op="UPDATE", text=st.fact, target=target),)
        elif op == "DELETE":  # the old state is false and nothing of it survives: delete it, file the news
            edits = (MemoryEdit(op="DELETE", target=target), MemoryEdit(op="ADD", text=st.fact))
        elif op == "NOOP":
            edits = (MemoryEdit(op="NOOP", target=target),)
        else:
            edits = (MemoryEdit(op="ADD", text=st.fact),)
        out[st.dia_id] = edits
    return out


def _pick(rng: random.Random, pool: list[QA], n: int) -> list[QA]:
    """``n`` questions covering every category and at least one "current" one."""
    if n >= len(pool):
        return list(pool)
    chosen: list[QA] = []
    for cat in (4, 1, 2, 3, 5):
        options = [q for q in pool if q.category == cat and q not in chosen]
        if cat == 4:  # the single-hop pick is a "current" one: the point of this data
            options = [q for q in options if "current" in q.tags]
        chosen.append(rng.choice(options))
    rest = [q for q in pool if q not in chosen]
    rng.shuffle(rest)
    chosen.extend(rest[: max(0, n - len(chosen))])
    keep = set(map(id, chosen[:n]))
    return [q for q in pool if id(q) in keep]  # stable order: by category, as generated


def generate(seed: int = 0, n_sessions: int = 4, n_questions: int = 8, *, start: datetime | None = None) -> Conversation:
    """A seeded synthetic conversation with changing facts and ``n_questions`` QA.

    ``n_questions`` >= 5 guarantees every category 1-5 and a "current" question;
    ``n_questions=0`` (or any number >= 17) returns the whole pool of 17.
    """
    if n_sessions < 1:
        raise ValueError("n_sessions must be >= 1")
    rng = random.Random(seed)
    world = _make_world(rng)
    steps = _plan(rng)
    _schedule(steps, n_sessions)
    if start is None:
        start = datetime(2023, rng.randint(1, 9), rng.randint(1, 28), rng.randint(8, 21), rng.choice([0, 5, 12, 20, 34, 47, 55]))
    sessions = _dialogue(rng, world, steps, n_sessions, start)
    pool = _questions(world)
    qa = _pick(rng, pool, n_questions if n_questions > 0 else len(pool))
    observations = {st.dia_id: (({"a": world.a, "b": world.b}[st.owner], st.fact),) for st in world.steps.values()}
    return Conversation(
        sample_id=f"synthetic-{seed}",
        speaker_a=world.a,
        speaker_b=world.b,
        sessions=tuple(sessions),
        qa=tuple(qa),
        observations=observations,
        edits=_edits(world),
    )


def generate_dataset(n: int, seed: int = 0, *, n_sessions: int | tuple[int, int] = (3, 6), n_questions: int = 0) -> list[Conversation]:
    """``n`` conversations; conversation ``i`` is ``generate(seed * 100_003 + i)``, all its questions by default.

    ``n_sessions`` is a count or an inclusive range drawn per conversation.
    Different seeds give disjoint conversations (ids ``synthetic-<seed * 100003 + i>``),
    so seeds split training, validation and held-out test data.
    """
    rng = random.Random(seed)
    out = []
    for i in range(n):
        sessions = n_sessions if isinstance(n_sessions, int) else rng.randint(*n_sessions)
        out.append(generate(seed * 100_003 + i, n_sessions=sessions, n_questions=n_questions))
    return out
