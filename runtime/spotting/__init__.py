"""Beyond features: action spotting from the heads (`tsf-spot`), SoccerNet's average-mAP and match
pictures (`tsf-plot`). Reads what `tsf-extract --heads` writes; needs only NumPy (and matplotlib
for pictures)."""
