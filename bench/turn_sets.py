"""The turn-taking test sets (bench/turn_taking.py): what callers say, whole or with a pause inside.

Three sets of each kind, so that rules are not only judged on the sentences they were written against:
- "tuning": the set adaptive end of turn (voicebridge/call/endpointing.py) was first developed on;
- "dev": written as a held-out set; its failures then shaped the rules (the verbs' objects came before
  it, the thinking phrases, lone discourse words, bare subordinate clauses and the longer "unsure" wait
  after), so it is a development set now;
- "held-out": written before those last changes and not used to change anything; its figures are the
  ones to believe.
A paused utterance is said in two parts with silence between them, as people do when they hesitate ("Um,
..."), read a number in groups, list things or stop mid-phrase to think.

"real" is recorded human speech (bench/real_speech.py fetches it from PyPI and npm): read sentences whose
own pauses, at commas and between phrases, are not ours to choose.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webrtcvad
from call_latency import SENTENCES
from real_speech import clips, fetch, phone_line

from voicebridge.audio.resample import resample_once
from voicebridge.audio.turn import DETECTOR_RATE, FRAME_BYTES, FRAME_MS
from voicebridge.config.schema import TurnConfig

# The complete utterances of bench/call_latency.py.
TUNING_COMPLETE = SENTENCES
TUNING_PAUSED = [
    ("My phone number is nine eight seven six", "five four three two one zero."),
    ("The account number is one two three", "four five six seven."),
    ("Um", "I need to change my booking."),
    ("So the thing is", "my order never arrived."),
    ("I need milk,", "eggs and bread."),
    ("I would like to order", "two pizzas and a bottle of water."),
    ("Can you tell me", "when the clinic opens on Sunday?"),
    ("I was wondering if", "you could help me with my bill."),
    ("My name is", "Priya Sharma."),
    ("I want to book a table for", "four people tonight."),
]

DEV_COMPLETE = [
    "Where is your nearest branch?",
    "I want to return the shoes I bought.",
    "Can you check the status of my refund?",
    "No, that is not right.",
    "My flight was cancelled this morning.",
    "Which documents do I need to bring?",
    "I would like to speak to a manager.",
    "Please call me back after six.",
    "How long will the delivery take?",
    "Okay, thank you so much.",
    "The internet has been down since yesterday.",
    "Yes, please go ahead.",
]
DEV_PAUSED = [
    ("My pin code is five six zero", "zero three four."),
    ("Uh", "is the store open today?"),
    ("I want to pay my", "electricity bill."),
    ("The date of birth is twelve", "March nineteen ninety."),
    ("Could you please", "check my order status?"),
    ("I am calling about", "the refund for my last order."),
    ("My email is priya", "at gmail dot com."),
    ("We need two rooms,", "one double and one single."),
    ("Actually", "I want to cancel it."),
    ("Is it possible to", "move my appointment to Friday?"),
    ("The order number is four four", "seven one nine."),
    ("Hmm, let me see,", "I think it was last Tuesday."),
    ("I would like to know", "the price of the annual plan."),
    ("Please send me", "the details on WhatsApp."),
    ("I live in", "Koramangala, near the lake."),
    ("Yes, and", "also add a dessert please."),
    ("What I mean is", "the payment failed twice."),
    ("Can you give me", "the number of the branch?"),
    ("I bought a phone,", "a charger and a cover."),
    ("Because the last time", "nobody called me back."),
]

HELD_OUT_COMPLETE = [
    "What are your opening hours today?",
    "I would like to upgrade my plan.",
    "My card was charged but the order failed.",
    "Can I pay by cash on delivery?",
    "No, I did not receive any message.",
    "Please book it for Friday evening.",
    "Who should I talk to about a refund?",
    "The technician never came.",
    "Yes, that is correct.",
    "Is there a branch near Whitefield?",
    "Sure, go ahead.",
    "I want to close my account.",
]
HELD_OUT_PAUSED = [
    ("I want to transfer money to", "my brother's account."),
    ("The problem is that", "the app keeps crashing."),
    ("Er", "what are your charges for delivery?"),
    ("My aadhaar number ends in four two", "seven nine."),
    ("I think", "I was charged twice."),
    ("Could I get", "a copy of the invoice?"),
    ("We are a family of", "five people."),
    ("Tomorrow morning,", "around ten o'clock."),
    ("She said that", "the parcel was delivered."),
    ("I'd like to know if", "you have any vegetarian options."),
    ("Let me check,", "the booking reference is A B three."),
    ("I called yesterday and", "nobody picked up."),
    ("Is there any way", "to get a refund?"),
    ("My address is", "twelve M G Road."),
    ("Two large pizzas,", "one garlic bread and a coke."),
    ("Basically", "my card got blocked."),
    ("The reason I'm calling is", "my bill is too high."),
    ("Can you repeat", "the last part please?"),
    ("First of all,", "thank you for calling back."),
    ("I have been waiting since", "Monday for the technician."),
]

SETS: dict[str, tuple[list[str], list[tuple[str, str]]]] = {
    "tuning": (TUNING_COMPLETE, TUNING_PAUSED),
    "dev": (DEV_COMPLETE, DEV_PAUSED),
    "held-out": (HELD_OUT_COMPLETE, HELD_OUT_PAUSED),
}


def real_clips(cache: Path) -> list[RealClip]:
    """The recorded clips as a phone line carries them, each cut at its last voiced frame (as the
    daemon's detector hears it), with the pauses inside it."""
    found = []
    for name, _, pcm16k in clips(*fetch(cache)):
        line = phone_line(pcm16k)
        voiced = _voiced_frames(resample_once(line, 8000, DETECTOR_RATE))
        if not any(voiced):
            continue
        last = max(i for i, v in enumerate(voiced) if v)
        pauses = _pauses_ms(voiced[: last + 1])
        found.append(RealClip(name, line[: (last + 1) * FRAME_MS * 8 * 2], pauses))
    return found


@dataclass(frozen=True)
class RealClip:
    name: str
    pcm: bytes  # 8 kHz PCM16, ending on its last voiced frame
    pauses_ms: list[int]  # silences of 300 ms or more between its voiced frames


def _voiced_frames(pcm16k: bytes) -> list[bool]:
    config = TurnConfig()
    vad = webrtcvad.Vad(config.vad_aggressiveness)
    floor = (10 ** (config.energy_floor_dbfs / 20) * 32768) ** 2
    voiced = []
    for offset in range(0, len(pcm16k) - FRAME_BYTES + 1, FRAME_BYTES):
        frame = pcm16k[offset : offset + FRAME_BYTES]
        samples = np.frombuffer(frame, "<i2").astype(np.float32)
        loud = float(np.dot(samples, samples)) / len(samples) >= floor
        voiced.append(loud and vad.is_speech(frame, DETECTOR_RATE))
    return voiced


def _pauses_ms(voiced: list[bool]) -> list[int]:
    pauses, run, started = [], 0, False
    for v in voiced:
        if v:
            if started and run * FRAME_MS >= 300:
                pauses.append(run * FRAME_MS)
            started, run = True, 0
        else:
            run += 1
    return pauses
