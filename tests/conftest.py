import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# torch.jit.script deprecation warnings from Detectron2's import-time scripting are noise here.
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
