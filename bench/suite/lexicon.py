"""The words benchmark cases are made of: cue words, their translations, filler talk.

The interaction model is trained on part of model/lexicon.py's tables only (``TRAIN_ENTRIES``,
``TRAIN_CATEGORY_WORDS``); the rest is kept for benchmarks. The cue words here -- foreign words and colours
-- are all outside the training part (tests/test_bench_cases.py asserts it against model/lexicon.py), so a
CueSpeak score measures reacting to words the model was never trained on. They are chosen among the words
the runtime's lexicon still knows (its benchmark part), since a model can only be asked to translate a
word its recogniser can hear. Number words are the exception: every one of them is a template word in
training (model/lexicon.py, ``UNSPLIT_CATEGORIES``), so number cues test the rule, not new words.
"""

from __future__ import annotations

# Foreign word -> accepted English answers (the first is the canonical one). Accents are left out: flite
# reads ASCII only (model/tts.py strips them anyway).
SPANISH: dict[str, list[str]] = {
    "caballo": ["horse"],
    "vaca": ["cow"],
    "pajaro": ["bird"],
    "conejo": ["rabbit", "bunny"],
    "tortuga": ["turtle", "tortoise"],
    "pato": ["duck"],
    "rana": ["frog"],
    "tiburon": ["shark"],
    "queso": ["cheese"],
    "silla": ["chair"],
    "vaso": ["glass"],
    "barco": ["boat", "ship"],
    "zapato": ["shoe", "shoes"],
    "cepillo": ["brush"],
}
FRENCH: dict[str, list[str]] = {
    "cochon": ["pig"],
    "poisson": ["fish"],
    "peche": ["peach"],
    "viande": ["meat"],
    "chaise": ["chair"],
    "assiette": ["plate"],
    "savon": ["soap"],
    "bouteille": ["bottle"],
    "etoile": ["star"],
}
LANGUAGES = {"Spanish": SPANISH, "French": FRENCH}

COLOURS = ["black", "silver", "gold", "beige", "cyan", "bronze"]
# Numbers as said, with what the recogniser may write for them.
NUMBER_WORDS = {
    1: ["one", "1", "won"],
    2: ["two", "2", "to", "too"],
    3: ["three", "3"],
    4: ["four", "4", "for"],
    5: ["five", "5"],
    6: ["six", "6"],
    7: ["seven", "7"],
    8: ["eight", "8", "ate"],
    9: ["nine", "9"],
    10: ["ten", "10"],
    11: ["eleven", "11"],
    12: ["twelve", "12"],
    15: ["fifteen", "15"],
    20: ["twenty", "20"],
    30: ["thirty", "30"],
}

# Sentences with one slot for a cue word, grouped by what fits the slot. The slot is mid-sentence in most,
# so the cue's end is not a pause the agent could wait for.
CUE_SENTENCES = {
    "object": [
        "Yesterday I finally found the {} I had lost last month.",
        "My neighbour showed me a {} that she bought at the market.",
        "There was a {} right next to the door when I came home.",
        "I tried to draw a {} for my little brother this morning.",
        "Somebody left a {} on the bus, and nobody claimed it.",
        "We talked about the {} for a while and then moved on.",
        "In the story, the {} turns out to be the hero of the day.",
        "I keep thinking about that {} we saw on the trip.",
    ],
    "colour": [
        "I painted the old fence {} last weekend with my dad.",
        "She wore a {} scarf to the meeting on Tuesday.",
        "The new kitchen chairs are {} and they look great.",
        "He bought a {} bicycle even though it cost a lot.",
        "The sky turned {} just before the storm arrived.",
        "My favourite mug is {} with a small crack on the side.",
        "They decided to paint the front door {} this spring.",
    ],
    "number": [
        "We waited {} minutes at the station before the train came.",
        "There were {} people in the queue ahead of me.",
        "I have read {} pages of that book so far.",
        "The recipe says to bake it for {} minutes at most.",
        "My cousin has {} plants on her balcony right now.",
        "We walked {} blocks before we found the cafe.",
        "The shop had only {} tickets left for the concert.",
    ],
}

# Everyday sentences with no colour, number or foreign word in them: the talk around the cues.
FILLER_SENTENCES = [
    "So I got up early today because the neighbours were making a lot of noise.",
    "After breakfast I went for a walk along the river.",
    "The weather was nice, so I stayed outside longer than I planned.",
    "Then I called my sister to ask how her new job is going.",
    "She said it is busy, but she likes the people there.",
    "In the afternoon I tried to clean the kitchen.",
    "That took much longer than I thought it would.",
    "I also need to fix the shelf in the hallway at some point.",
    "My friend says I should just buy a new shelf.",
    "Anyway, I made some soup for dinner and it turned out fine.",
    "Later we watched a film about a detective in a small town.",
    "The ending was a bit strange, but I enjoyed it.",
    "Tomorrow I want to go to the library and return some books.",
    "I have been meaning to do that for weeks now.",
    "Maybe I will stop by the bakery on the way back.",
    "They make really good bread on weekend mornings.",
    "Last time the line went all the way down the street.",
    "I think people come from the other side of town for it.",
    "Honestly, it is the best part of my week.",
    "Work has been quiet lately, which is a nice change.",
    "We finished the big project just before the holidays.",
    "My manager was happy with how it went.",
    "Now I am trying to plan a short trip somewhere quiet.",
    "Somewhere with a lake and not many tourists.",
    "I would like to read, swim and sleep a lot.",
    "The hard part is finding a place that is not fully booked.",
    "I asked around, and a colleague gave me a few ideas.",
    "Some of them sound perfect, if they are still available.",
    "I also started learning to play the guitar again.",
    "My fingers hurt a bit, but it is getting easier.",
    "I practise in the evening when the house is quiet.",
    "The neighbours have not complained yet, so that is good.",
    "Oh, and I finally finished that long novel.",
    "It took me most of the winter to get through it.",
    "The middle part dragged, but the last chapters were great.",
    "I lent it to my brother, who will probably never give it back.",
]

# TimeSpeak: what a reminder asks the agent to say (text said -> accepted contents of the agent's speech).
REMINDER_WORDS: dict[str, list[str]] = {
    "breathe": ["breathe", "breath", "breathing"],
    "relax": ["relax", "relaxed"],
    "switch": ["switch"],
    "stretch": ["stretch"],
    "drink water": ["drink water", "water"],
    "smile": ["smile"],
    "blink": ["blink"],
    "look up": ["look up"],
    "sit up straight": ["sit up straight", "sit up", "straight"],
    "next": ["next"],
    "slow down": ["slow down"],
    "keep going": ["keep going"],
}
TASK_WORDS: dict[str, list[str]] = {
    "stand up": ["stand up"],
    "check the oven": ["check the oven", "oven"],
    "call my mom": ["call your mom", "call my mom", "call mom", "call"],
    "take a break": ["take a break", "break"],
    "turn around": ["turn around"],
    "start the timer": ["start the timer", "timer"],
    "open the window": ["open the window", "window"],
    "feed the cat": ["feed the cat", "feed"],
    "check my email": ["check your email", "check my email", "email"],
    "put the kettle on": ["put the kettle on", "kettle"],
}
