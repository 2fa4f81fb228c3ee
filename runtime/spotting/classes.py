"""SoccerNet-v2's action classes: the one list that export, training and spotting all use.

The 17 actions are in the order of SoccerNet's official event dictionary (`EVENT_DICTIONARY_V2`);
the reference appended a background class as index 17 (docs/reference.md §1). The reference never
saved which index meant which action in its own weights, so this order is what tsf asserts when a
user says `--soccernet-classes`, never a guess about someone else's weights.
"""

SOCCERNET_V2_ACTIONS = (
    "Penalty", "Kick-off", "Goal", "Substitution", "Offside", "Shots on target",
    "Shots off target", "Clearance", "Ball out of play", "Throw-in", "Foul",
    "Indirect free-kick", "Direct free-kick", "Corner", "Yellow card", "Red card",
    "Yellow->red card",
)
BACKGROUND = "background"
SOCCERNET_V2_CLASS_NAMES = SOCCERNET_V2_ACTIONS + (BACKGROUND,)
