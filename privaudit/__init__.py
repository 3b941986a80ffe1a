"""privaudit: train, attack and audit federated face-recognition systems.

Layers (imports only point down): privaudit (facade) > reports > attacks > federated_core >
accountants. See ../shared/DESIGN.md in the development tree.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
