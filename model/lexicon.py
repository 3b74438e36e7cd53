"""The lexicon annotator: what a recognised word *is*, as tokens the interaction model can react to.

CueSpeak asks the model to react to classes of words it may never have seen in training ("say stop when I
mention a colour", "every time I say a Spanish word, give me the English word"). Recognising "crimson" as a
colour or "manzana" as Spanish for apple is a lookup, not something a small network should memorise, so
the runtime appends the lookup's answer after each recognised word (see model/ticks.py)::

    rojo <means> red          a foreign word and its English meaning
    red <cat:colour>          an English word of one of ticks.CATEGORIES (a word can have several)

The tables here are the whole lexicon the runtime annotates with. They are split deterministically (by a
hash of the word) into a **training** part, the only one the scenario generator may use, and a
**benchmark** part for the CueSpeak cases, so that a benchmark score measures reacting to annotations, not
recall of trained words. Number words are not split: TimeSpeak instructions need every one of them, so they
are template words, seen in training whatever the split says.

Foreign words are spelled in plain ASCII (accents dropped: flite's English front end drops them too) and
spoken by flite with its English letter-to-sound rules, which is how the benchmarks synthesise them. The
recogniser is taught them with exactly those pronunciations (:func:`pronunciations`, from flite's ``t2p``),
see ``StreamingRecognizer(extra_words=...)`` in model/asr.py. Words whose spelling is an English word of
the recogniser's vocabulary ("once", "dos", "pain", "chat") are left out: they would fire in plain English.

``python -m model.lexicon check`` measures how well flite-spoken foreign words inside English sentences are
recognised (see :func:`check_recognition`); ``python -m model.lexicon words`` rebuilds the English word
list the scenario generator draws slot words from (:data:`ENGLISH_WORDS_PATH`).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from model.ticks import CATEGORIES, MEANS, category_token

LANGUAGES = ("spanish", "french")
BENCH_SHARE = 4  # one entry in this many goes to the benchmark part
ENGLISH_WORDS_PATH = Path(__file__).parent / "data" / "english_words.txt"


def split_words(text: str) -> tuple[str, ...]:
    """A word list written as one string: easier to read and edit than a list of literals."""
    return tuple(text.split())


@dataclass(frozen=True)
class Entry:
    """A foreign word, as the recogniser spells it, and its English meaning (one word)."""

    word: str
    language: str
    meaning: str


# fmt: off
_SPANISH: tuple[tuple[str, str], ...] = (
    ("gato", "cat"), ("perro", "dog"), ("caballo", "horse"), ("vaca", "cow"), ("cerdo", "pig"),
    ("oveja", "sheep"), ("pajaro", "bird"), ("pez", "fish"), ("raton", "mouse"), ("conejo", "rabbit"),
    ("tortuga", "turtle"), ("serpiente", "snake"), ("oso", "bear"), ("lobo", "wolf"), ("zorro", "fox"),
    ("tigre", "tiger"), ("elefante", "elephant"), ("jirafa", "giraffe"), ("pollo", "chicken"),
    ("gallina", "hen"), ("pato", "duck"), ("abeja", "bee"), ("hormiga", "ant"), ("arana", "spider"),
    ("mariposa", "butterfly"), ("ballena", "whale"), ("tiburon", "shark"), ("rana", "frog"),
    ("cabra", "goat"), ("burro", "donkey"), ("rojo", "red"), ("azul", "blue"), ("verde", "green"),
    ("amarillo", "yellow"), ("blanco", "white"), ("gris", "grey"), ("rosado", "pink"),
    ("morado", "purple"), ("naranja", "orange"), ("marron", "brown"), ("dorado", "golden"),
    ("plateado", "silver"), ("tres", "three"), ("cuatro", "four"), ("cinco", "five"), ("seis", "six"),
    ("siete", "seven"), ("ocho", "eight"), ("nueve", "nine"), ("diez", "ten"), ("doce", "twelve"),
    ("veinte", "twenty"), ("cien", "hundred"), ("manzana", "apple"), ("platano", "banana"),
    ("fresa", "strawberry"), ("uva", "grape"), ("pera", "pear"), ("limon", "lemon"),
    ("sandia", "watermelon"), ("pina", "pineapple"), ("cereza", "cherry"), ("durazno", "peach"),
    ("queso", "cheese"), ("leche", "milk"), ("agua", "water"), ("arroz", "rice"), ("huevo", "egg"),
    ("carne", "meat"), ("sopa", "soup"), ("azucar", "sugar"), ("mantequilla", "butter"),
    ("galleta", "cookie"), ("pastel", "cake"), ("cerveza", "beer"), ("vino", "wine"),
    ("jugo", "juice"), ("cabeza", "head"), ("mano", "hand"), ("brazo", "arm"), ("pierna", "leg"),
    ("ojo", "eye"), ("oreja", "ear"), ("nariz", "nose"), ("boca", "mouth"), ("diente", "tooth"),
    ("pelo", "hair"), ("cuello", "neck"), ("espalda", "back"), ("rodilla", "knee"), ("dedo", "finger"),
    ("corazon", "heart"), ("estomago", "stomach"), ("hombro", "shoulder"), ("lunes", "monday"),
    ("martes", "tuesday"), ("miercoles", "wednesday"), ("jueves", "thursday"), ("viernes", "friday"),
    ("sabado", "saturday"), ("domingo", "sunday"), ("lluvia", "rain"), ("nieve", "snow"),
    ("viento", "wind"), ("nube", "cloud"), ("tormenta", "storm"), ("calor", "heat"), ("frio", "cold"),
    ("niebla", "fog"), ("casa", "house"), ("mesa", "table"), ("silla", "chair"), ("puerta", "door"),
    ("ventana", "window"), ("cama", "bed"), ("libro", "book"), ("llave", "key"), ("cuchara", "spoon"),
    ("tenedor", "fork"), ("cuchillo", "knife"), ("plato", "plate"), ("vaso", "glass"),
    ("reloj", "clock"), ("espejo", "mirror"), ("lampara", "lamp"), ("escuela", "school"),
    ("ciudad", "city"), ("playa", "beach"), ("calle", "street"), ("tienda", "shop"),
    ("iglesia", "church"), ("biblioteca", "library"), ("mercado", "market"), ("hombre", "man"),
    ("mujer", "woman"), ("nino", "child"), ("hermano", "brother"), ("hermana", "sister"),
    ("madre", "mother"), ("abuelo", "grandfather"), ("abuela", "grandmother"), ("amigo", "friend"),
    ("hijo", "son"), ("hija", "daughter"), ("coche", "car"), ("tren", "train"), ("barco", "boat"),
    ("avion", "plane"), ("bicicleta", "bicycle"), ("dinero", "money"), ("trabajo", "work"),
    ("noche", "night"), ("semana", "week"), ("hoy", "today"), ("ayer", "yesterday"),
    ("papel", "paper"), ("lapiz", "pencil"), ("camisa", "shirt"), ("zapato", "shoe"),
    ("vestido", "dress"), ("arbol", "tree"), ("flor", "flower"), ("hierba", "grass"),
    ("piedra", "stone"), ("fuego", "fire"), ("tierra", "earth"), ("cielo", "sky"), ("luna", "moon"),
    ("estrella", "star"), ("grande", "big"), ("pequeno", "small"), ("feliz", "happy"),
    ("triste", "sad"), ("rapido", "fast"), ("lento", "slow"), ("caliente", "hot"), ("nuevo", "new"),
    ("viejo", "old"), ("bueno", "good"), ("malo", "bad"), ("bonito", "pretty"),
    ("hermoso", "beautiful"), ("cansado", "tired"), ("enfermo", "sick"), ("comer", "eat"),
    ("beber", "drink"), ("dormir", "sleep"), ("correr", "run"), ("hablar", "speak"),
    ("cantar", "sing"), ("bailar", "dance"), ("leer", "read"), ("escribir", "write"),
    ("nadar", "swim"), ("caminar", "walk"), ("jugar", "play"), ("cocinar", "cook"),
    ("ventilador", "fan"), ("jardin", "garden"), ("cocina", "kitchen"), ("bano", "bathroom"),
    ("almohada", "pillow"), ("manta", "blanket"), ("toalla", "towel"), ("jabon", "soap"),
    ("cepillo", "brush"), ("bolsa", "bag"), ("caja", "box"), ("botella", "bottle"), ("taza", "cup"),
    ("sombra", "shadow"), ("bosque", "forest"), ("isla", "island"), ("lago", "lake"),
    ("puente", "bridge"), ("camino", "road"), ("pueblo", "village"), ("granja", "farm"),
    ("pregunta", "question"), ("respuesta", "answer"), ("cancion", "song"), ("pelicula", "movie"),
    ("juego", "game"), ("regalo", "gift"), ("fiesta", "party"), ("cumpleanos", "birthday"),
    ("verano", "summer"), ("invierno", "winter"), ("otono", "autumn"), ("primavera", "spring"),
)
_FRENCH: tuple[tuple[str, str], ...] = (
    ("chien", "dog"), ("cheval", "horse"), ("vache", "cow"), ("cochon", "pig"), ("mouton", "sheep"),
    ("oiseau", "bird"), ("poisson", "fish"), ("souris", "mouse"), ("lapin", "rabbit"),
    ("loup", "wolf"), ("renard", "fox"), ("singe", "monkey"), ("poulet", "chicken"),
    ("canard", "duck"), ("abeille", "bee"), ("fourmi", "ant"), ("araignee", "spider"),
    ("papillon", "butterfly"), ("baleine", "whale"), ("requin", "shark"), ("grenouille", "frog"),
    ("chevre", "goat"), ("ecureuil", "squirrel"), ("hibou", "owl"), ("bleu", "blue"),
    ("vert", "green"), ("jaune", "yellow"), ("noir", "black"), ("blanc", "white"), ("deux", "two"),
    ("trois", "three"), ("quatre", "four"), ("cinq", "five"), ("huit", "eight"), ("neuf", "nine"),
    ("dix", "ten"), ("onze", "eleven"), ("douze", "twelve"), ("vingt", "twenty"),
    ("mille", "thousand"), ("pomme", "apple"), ("banane", "banana"), ("fraise", "strawberry"),
    ("poire", "pear"), ("citron", "lemon"), ("pasteque", "watermelon"), ("ananas", "pineapple"),
    ("cerise", "cherry"), ("peche", "peach"), ("fromage", "cheese"), ("lait", "milk"),
    ("eau", "water"), ("riz", "rice"), ("oeuf", "egg"), ("viande", "meat"), ("soupe", "soup"),
    ("sucre", "sugar"), ("sel", "salt"), ("beurre", "butter"), ("gateau", "cake"), ("biere", "beer"),
    ("vin", "wine"), ("jus", "juice"), ("tete", "head"), ("pied", "foot"), ("jambe", "leg"),
    ("oeil", "eye"), ("oreille", "ear"), ("nez", "nose"), ("bouche", "mouth"), ("cheveux", "hair"),
    ("cou", "neck"), ("genou", "knee"), ("doigt", "finger"), ("coeur", "heart"), ("ventre", "stomach"),
    ("epaule", "shoulder"), ("lundi", "monday"), ("mardi", "tuesday"), ("mercredi", "wednesday"),
    ("jeudi", "thursday"), ("vendredi", "friday"), ("samedi", "saturday"), ("dimanche", "sunday"),
    ("pluie", "rain"), ("neige", "snow"), ("soleil", "sun"), ("nuage", "cloud"), ("orage", "storm"),
    ("chaleur", "heat"), ("froid", "cold"), ("brouillard", "fog"), ("maison", "house"),
    ("chaise", "chair"), ("fenetre", "window"), ("livre", "book"), ("cle", "key"),
    ("cuillere", "spoon"), ("fourchette", "fork"), ("couteau", "knife"), ("assiette", "plate"),
    ("verre", "glass"), ("horloge", "clock"), ("miroir", "mirror"), ("lampe", "lamp"),
    ("ecole", "school"), ("ville", "city"), ("plage", "beach"), ("montagne", "mountain"),
    ("riviere", "river"), ("magasin", "shop"), ("eglise", "church"), ("bibliotheque", "library"),
    ("homme", "man"), ("femme", "woman"), ("enfant", "child"), ("frere", "brother"),
    ("soeur", "sister"), ("pere", "father"), ("ami", "friend"), ("fils", "son"), ("fille", "daughter"),
    ("voiture", "car"), ("bateau", "boat"), ("velo", "bicycle"), ("argent", "money"),
    ("travail", "work"), ("nuit", "night"), ("jour", "day"), ("matin", "morning"), ("semaine", "week"),
    ("annee", "year"), ("hier", "yesterday"), ("papier", "paper"), ("chemise", "shirt"),
    ("chaussure", "shoe"), ("chapeau", "hat"), ("arbre", "tree"), ("fleur", "flower"),
    ("herbe", "grass"), ("feu", "fire"), ("terre", "earth"), ("ciel", "sky"), ("mer", "sea"),
    ("lune", "moon"), ("etoile", "star"), ("petit", "small"), ("heureux", "happy"), ("rapide", "fast"),
    ("chaud", "hot"), ("nouveau", "new"), ("vieux", "old"), ("mauvais", "bad"), ("joli", "pretty"),
    ("beau", "beautiful"), ("malade", "sick"), ("manger", "eat"), ("boire", "drink"),
    ("courir", "run"), ("parler", "speak"), ("chanter", "sing"), ("danser", "dance"), ("lire", "read"),
    ("ecrire", "write"), ("nager", "swim"), ("marcher", "walk"), ("jouer", "play"),
    ("cuisiner", "cook"), ("oreiller", "pillow"), ("couverture", "blanket"), ("serviette", "towel"),
    ("savon", "soap"), ("brosse", "brush"), ("sac", "bag"), ("boite", "box"), ("bouteille", "bottle"),
    ("tasse", "cup"), ("ombre", "shadow"), ("foret", "forest"), ("ile", "island"), ("lac", "lake"),
    ("pont", "bridge"), ("chemin", "road"), ("ferme", "farm"), ("reponse", "answer"),
    ("chanson", "song"), ("jeu", "game"), ("cadeau", "gift"), ("fete", "party"),
    ("anniversaire", "birthday"), ("ete", "summer"), ("hiver", "winter"), ("automne", "autumn"),
    ("printemps", "spring"),
)

# English words of each category (ticks.CATEGORIES), as pocketsphinx spells them. Left out: words whose
# everyday use is mostly something else ("back", "hand", "date", "may"), which would fire in any monologue.
CATEGORY_WORDS: Mapping[str, tuple[str, ...]] = {
    "colour": (
        "red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white", "grey",
        "gray", "silver", "gold", "violet", "crimson", "scarlet", "turquoise", "beige", "navy", "maroon",
        "teal", "indigo", "magenta", "lavender", "amber", "ivory", "cyan", "lilac", "olive", "bronze",
    ),
    "number": (
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred",
        "thousand", "million",
    ),
    "animal": (
        "cat", "dog", "horse", "cow", "pig", "sheep", "goat", "chicken", "duck", "rabbit", "mouse", "rat",
        "snake", "lion", "tiger", "bear", "wolf", "fox", "monkey", "elephant", "giraffe", "zebra", "camel",
        "kangaroo", "koala", "panda", "penguin", "dolphin", "whale", "shark", "octopus", "frog", "turtle",
        "lizard", "crocodile", "eagle", "owl", "parrot", "pigeon", "swan", "goose", "donkey", "deer",
        "moose", "squirrel", "hamster", "bee", "ant", "spider", "butterfly", "beaver", "otter",
        "hedgehog", "badger", "gorilla", "leopard", "cheetah", "hippo", "rhino", "ostrich", "flamingo",
    ),
    "fruit": (
        "apple", "banana", "orange", "pear", "peach", "plum", "cherry", "grape", "strawberry", "raspberry",
        "blueberry", "blackberry", "lemon", "lime", "mango", "pineapple", "watermelon", "melon", "kiwi",
        "apricot", "coconut", "papaya", "fig", "pomegranate", "cranberry", "grapefruit", "tangerine",
        "avocado",
    ),
    "day": ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    "body": (
        "head", "shoulder", "knee", "toe", "elbow", "wrist", "ankle", "finger", "thumb", "nose", "ear",
        "eye", "mouth", "lip", "tongue", "tooth", "teeth", "chin", "cheek", "forehead", "neck", "chest",
        "stomach", "belly", "hip", "leg", "arm", "foot", "heel", "hair", "skin", "heart", "brain", "lung",
        "liver", "kidney", "spine",
    ),
    "weather": (
        "rain", "snow", "sunny", "cloudy", "windy", "storm", "fog", "thunder", "lightning", "hail",
        "drizzle", "sunshine", "rainy", "snowy", "foggy", "breeze", "frost", "humid", "hurricane",
        "tornado", "blizzard", "stormy", "sleet", "rainbow", "misty", "overcast", "thunderstorm",
    ),
}
# fmt: on
# Left out of the lexicon: foreign words flite says like a frequent English word (t2p's phones are a
# dictionary pronunciation of one of the 15,000 words of english_words(): "cien" = "seen", "blanc" =
# "blank", "eau" = "oh"), and words the taught recogniser missed in both of two English frames
# (``python -m model.lexicon check``, EXTRA_WORD_WEIGHT 30, flite slt: 555 of 848 spoken instances of
# the 424 candidate words were recognised, and 2 foreign words appeared in 24 plain English sentences,
# "sel" and "soupe", both homophones, now left out). A cue the recogniser cannot hear is a benchmark case
# nobody can pass and a false cue in plain English is worse.
_UNRECOGNISABLE = frozenset(
    split_words(
        "abuelo agua annee arbre arroz bailar beau beurre biere blanc bleu boca bolsa bonito bosque brosse "
        "burro caja cama chaud chien ciel cien cinq cle coeur correr cou couteau danser deux doce douze "
        "durazno eau ecole ecureuil ete femme ferme fete feu fille fils fleur flor foret fraise gateau gato "
        "grande herbe heureux hier huit ile jabon jaune jeu jeudi joli jouer lac lait lampe leer lire livre "
        "loup lune lunes manta mardi mauvais miercoles mille noche nouveau nube nueve nuit ocho oiseau onze "
        "orage oreille oreja oveja pere petit playa pluie poire pomme raton reloj riz sac seis sel siete "
        "soeur soleil sombra soupe terre tierra toalla tres trois uva vieux ville vin zorro"
    )
)
# Closed classes the templates need whole (TimeSpeak: "every four seconds", "count to ten"): not split.
UNSPLIT_CATEGORIES = frozenset({"number"})


def _entries() -> tuple[Entry, ...]:
    entries: list[Entry] = []
    seen: set[str] = set()
    for language, table in (("spanish", _SPANISH), ("french", _FRENCH)):
        for word, meaning in table:
            if word not in seen and word not in _UNRECOGNISABLE:  # "gris" of both languages: one entry
                seen.add(word)
                entries.append(Entry(word, language, meaning))
    return tuple(entries)


FOREIGN_ENTRIES: tuple[Entry, ...] = _entries()


def is_bench(word: str) -> bool:
    """Whether ``word`` belongs to the benchmark part: a fixed hash, so the split never moves when
    entries are added or reordered."""
    return hashlib.sha256(word.encode()).digest()[0] % BENCH_SHARE == 0


TRAIN_ENTRIES: tuple[Entry, ...] = tuple(e for e in FOREIGN_ENTRIES if not is_bench(e.word))
BENCH_ENTRIES: tuple[Entry, ...] = tuple(e for e in FOREIGN_ENTRIES if is_bench(e.word))


def _split_categories(bench: bool) -> dict[str, tuple[str, ...]]:
    split: dict[str, tuple[str, ...]] = {}
    for category, words in CATEGORY_WORDS.items():
        if category in UNSPLIT_CATEGORIES:
            if not bench:
                split[category] = words
            continue
        split[category] = tuple(w for w in words if is_bench(w) == bench)
    return split


TRAIN_CATEGORY_WORDS: Mapping[str, tuple[str, ...]] = _split_categories(bench=False)
# Benchmark cue words per category; "number" has none (see UNSPLIT_CATEGORIES).
BENCH_CATEGORY_WORDS: Mapping[str, tuple[str, ...]] = _split_categories(bench=True)
# Every word a benchmark case may use as a cue: training data must never contain any of them.
BENCH_WORDS: frozenset[str] = frozenset(
    [e.word for e in BENCH_ENTRIES] + [w for words in BENCH_CATEGORY_WORDS.values() for w in words]
)


class Lexicon:
    """Looks up the annotations of recognised words. Plain dict lookups: microseconds per word."""

    def __init__(
        self,
        entries: Iterable[Entry] = FOREIGN_ENTRIES,
        categories: Mapping[str, Sequence[str]] = CATEGORY_WORDS,
    ) -> None:
        self._meaning = {e.word: e.meaning for e in entries}
        by_word: dict[str, list[str]] = {}
        for category in CATEGORIES:  # in ticks.CATEGORIES order, so annotations are canonical
            for word in categories.get(category, ()):
                by_word.setdefault(word, []).append(category)
        self._categories = {w: tuple(cs) for w, cs in by_word.items()}

    def meaning(self, word: str) -> str | None:
        return self._meaning.get(word)

    def categories(self, word: str) -> tuple[str, ...]:
        return self._categories.get(word, ())

    def annotations(self, word: str) -> tuple[str, ...]:
        """The tokens that follow ``word``: ``("<means>", "red")``, ``("<cat:colour>",)`` or ``()``."""
        tokens: list[str] = []
        meaning = self._meaning.get(word)
        if meaning is not None:
            tokens += [MEANS, meaning]
        tokens += [category_token(c) for c in self._categories.get(word, ())]
        return tuple(tokens)

    def annotate(self, words: Iterable[str]) -> tuple[str, ...]:
        """``words`` with each one's annotations after it."""
        tokens: list[str] = []
        for word in words:
            tokens.append(word)
            tokens.extend(self.annotations(word))
        return tuple(tokens)


# ----------------------------------------------------------------------------------------------------
# Text as the recogniser would spell it

_ONES = split_words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
)
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def number_words(n: int) -> str:
    """0 <= n < 10**12 in words as pocketsphinx spells them: 125 -> "one hundred twenty five"."""
    if n < 0 or n >= 10**12:
        raise ValueError(f"number out of range: {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens - 2] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")
    for size, name in ((10**9, "billion"), (10**6, "million"), (10**3, "thousand")):
        if n >= size:
            high, rest = divmod(n, size)
            return f"{number_words(high)} {name}" + (f" {number_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def _spell_number(match: re.Match[str]) -> str:
    whole, _, fraction = match.group().partition(".")
    spoken = number_words(int(whole)) if len(whole) <= 12 else " ".join(_ONES[int(d)] for d in whole)
    if fraction:
        spoken += " point " + " ".join(_ONES[int(d)] for d in fraction)
    return f" {spoken} "


def spoken_words(text: str) -> list[str]:
    """Typed or written text as the words a recogniser would have heard: lower case, numbers spelled
    out ("Every 2 seconds" -> every two seconds), punctuation dropped, apostrophes kept ("that's")."""
    text = _NUMBER.sub(_spell_number, text.lower().replace(",", ""))
    words = (word.strip("'") for word in re.sub(r"[^a-z' ]+", " ", text).split())
    return [word for word in words if word]


# ----------------------------------------------------------------------------------------------------
# Teaching the recogniser the foreign words

# flite's US English phone set is CMU's, in lower case with stress digits, plus a schwa and a pause.
_FLITE_TO_CMU = {"ax": "AH", "axr": "ER"}
T2P_TIMEOUT_S = 5.0


@cache
def _t2p_binary() -> str | None:
    return shutil.which("t2p")


def pronunciation(word: str) -> str | None:
    """``word`` as flite says it, in the recogniser's (CMU) phones: ``"gato"`` -> ``"G EY T OW"``.

    ``t2p`` ships with flite and runs its lexicon and letter-to-sound rules (~2 ms a word). None when
    flite is not installed or says nothing for the word.
    """
    binary = _t2p_binary()
    if binary is None:
        return None
    result = subprocess.run(
        [binary, word], capture_output=True, text=True, timeout=T2P_TIMEOUT_S, check=False
    )
    phones = [p.rstrip("012") for p in result.stdout.split() if p != "pau"]
    if result.returncode != 0 or not phones:
        return None
    return " ".join(_FLITE_TO_CMU.get(p, p.upper()) for p in phones)


@cache
def recogniser_words() -> dict[str, str]:
    """Every foreign word of the lexicon with its pronunciation, for ``StreamingRecognizer(extra_words=)``.

    Cached: one process asks flite once (~1 s for the whole lexicon); empty without flite.
    """
    words: dict[str, str] = {}
    for entry in FOREIGN_ENTRIES:
        phones = pronunciation(entry.word)
        if phones is not None:
            words[entry.word] = phones
    return words


# ----------------------------------------------------------------------------------------------------
# The English word list of the scenario generator

# Words a scenario must never ask the agent to say, whatever their frequency.
_BLOCKED = frozenset(
    split_words(
        "ass asses asshole assholes bastard bastards bomb bombing bombs boob boobs bullshit cock "
        "cocks cocaine crap crappy cum damn damned dammit damnit dick dicks dumbass dyke erection fag "
        "fags gun guns genitals goddamn hell heroin hooker hookers horny jackass kill killed killer "
        "killers killing kills meth murder murdered murderer murders naked nazi nazis negro nude "
        "nudes orgasm pedo pedophile penis piss pissed pissing prick pussy rape raped rapes rapist "
        "rapists retard retarded retards semen sex sexual sexually sexy shoot shooting shot stripper "
        "strippers suicide terrorist terrorists tit tits tranny twat vagina wank weed"
    )
)
_BLOCKED_PREFIXES = re.compile(r"^(fuck|shit|bitch|cunt|nigg|fagg|porn|masturb|ejacul|jizz|dildo|whor|slut)")
ENGLISH_WORDS_COUNT = 15000


@cache
def english_words() -> tuple[str, ...]:
    """The most frequent words of the recogniser's language model, most frequent first (see
    :func:`build_english_words`): words flite says and pocketsphinx knows."""
    return tuple(w for w in ENGLISH_WORDS_PATH.read_text().split() if not w.startswith("#"))


def build_english_words(path: Path = ENGLISH_WORDS_PATH, count: int = ENGLISH_WORDS_COUNT) -> None:
    """Write the ``count`` most frequent plain words of pocketsphinx's US English LM that its dictionary
    can pronounce, blocked words and foreign lexicon words left out.

    The LM's unigram probabilities are the only word frequencies shipped with the project.
    """
    from pocketsphinx import Decoder

    decoder = Decoder(loglevel="ERROR")
    lm = decoder.get_lm()
    dictionary = Path(decoder.config["dict"]).read_text().splitlines()
    foreign = {e.word for e in FOREIGN_ENTRIES}
    candidates = {
        word
        for word in (line.split(maxsplit=1)[0] for line in dictionary if line)
        if re.fullmatch(r"[a-z]{2,}|[ai]", word)  # "word(2)" is a second pronunciation
        and word not in _BLOCKED
        and word not in foreign
        and not _BLOCKED_PREFIXES.match(word)
    }
    scored = [(lm.prob([word]), word) for word in candidates]
    unknown = min(score for score, _ in scored)  # what the LM answers for a word it does not have
    words = [word for score, word in sorted(scored, key=lambda s: (-s[0], s[1])) if score > unknown]
    header = "# The most frequent words of pocketsphinx's en-us LM; rebuild: python -m model.lexicon words\n"
    path.write_text(header + "\n".join(words[:count]) + "\n")


# ----------------------------------------------------------------------------------------------------
# Measuring recognition of foreign words

# English frames a foreign word is spoken in, as a code-switching speaker would.
CHECK_FRAMES = (
    "i really like the {} we had yesterday",
    "my friend told me about a {} in the story",
    "so then we talked about {} for a while",
    "she said {} and then she laughed",
)
CHECK_PLAIN = (
    "i went to the shop and bought some bread and milk",
    "we were talking about the weather all afternoon",
    "my brother called me last night to ask about the car",
    "the meeting went on for much longer than anyone expected",
    "after lunch we walked along the river to the old bridge",
    "can you remind me what we decided about the garden",
    "she keeps a little notebook with all her favourite recipes",
    "the kids were playing outside until it got dark",
    "i think the train leaves at half past seven tomorrow morning",
    "there was a long queue at the post office again today",
    "he fixed the kitchen sink and then painted the fence",
    "we should probably book the tickets before the weekend",
    "my neighbour has a huge collection of old records",
    "the coffee in that little place near the station is really good",
    "i forgot my umbrella so i got completely soaked",
    "they moved to a small village near the coast last year",
    "the teacher asked us to read two chapters before monday",
    "honestly i have no idea where i left my keys",
    "we watched a documentary about the history of the city",
    "she plays the piano every evening after dinner",
    "the printer at work has been broken for a week",
    "let me tell you about the trip we took last summer",
    "the soup was a bit too salty but the bread was lovely",
    "i need to call the dentist and change my appointment",
)


@dataclass
class RecognitionCheck:
    words: int  # foreign words spoken
    recognised: int  # of them, recognised as themselves
    plain_sentences: int  # English sentences without foreign words
    false_foreign: int  # foreign words recognised in them
    missed: list[tuple[str, str]]  # (word, what was recognised in its sentence)


def check_recognition(words: Sequence[str], seed: int = 0, voice: str = "slt") -> RecognitionCheck:
    """Speak each foreign word inside an English frame with flite, recognise the sentence with the
    lexicon-taught recogniser, and count the words heard; also count foreign words "heard" in plain
    English sentences (false cues)."""
    import numpy as np

    from model.asr import StreamingRecognizer
    from model.tts import FliteSynthesizer

    rng = random.Random(seed)
    tts = FliteSynthesizer(voice)
    recognizer = StreamingRecognizer(extra_words=recogniser_words())
    foreign = {e.word for e in FOREIGN_ENTRIES}
    pad = np.zeros(3200, dtype=np.int16)

    def recognise(text: str) -> list[str]:
        recognizer.start()
        recognizer.accept(np.concatenate([pad, tts.synthesize(text), pad]))
        return recognizer.finish().split()

    missed = []
    for word in words:
        heard = recognise(rng.choice(CHECK_FRAMES).format(word))
        if word not in heard:
            missed.append((word, " ".join(heard)))
    false_foreign = sum(sum(w in foreign for w in recognise(s)) for s in CHECK_PLAIN)
    return RecognitionCheck(len(words), len(words) - len(missed), len(CHECK_PLAIN), false_foreign, missed)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.lexicon", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="measure recognition of flite-spoken foreign words")
    check.add_argument("--count", type=int, default=0, help="words to check (0: all)")
    check.add_argument("--voice", default="slt")
    sub.add_parser("words", help=f"rebuild {ENGLISH_WORDS_PATH.name}")
    args = parser.parse_args(argv)
    if args.command == "words":
        build_english_words()
        print(f"wrote {ENGLISH_WORDS_PATH}")
        return 0
    words = [e.word for e in FOREIGN_ENTRIES]
    if args.count:
        words = random.Random(0).sample(words, args.count)
    t0 = time.perf_counter()
    result = check_recognition(words, voice=args.voice)
    print(
        f"foreign words recognised: {result.recognised}/{result.words} "
        f"({result.recognised / max(1, result.words):.0%}); foreign words in "
        f"{result.plain_sentences} plain sentences: {result.false_foreign}; {time.perf_counter() - t0:.0f} s"
    )
    print("missed:", "; ".join(f"{word} ({heard})" for word, heard in result.missed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
