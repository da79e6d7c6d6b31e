"""Pure-torch UDA building blocks (no Detectron2 imports), unit-testable on tensors."""
