"""federated_core: the face-recognition substrate (data, models, heads, evaluation, pretraining)
and the federated-learning engine with its methods. Imports nothing from `attacks` or above."""

__all__: list[str] = []
