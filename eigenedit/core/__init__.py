"""The method: read a layer's attention weights (``attention``), decompose them (``factorize``), store the
directions (``directions``), act on the model with them (``operators``) while sampling (``sampling``)."""
