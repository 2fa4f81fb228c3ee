"""Fine-tuning stays in Paddle: the reference ppTimeSformer, strict weights I/O, data prep and recipe.

Dependencies: paddlepaddle (the model and training; 2.6 and 3.x), numpy.
"""
