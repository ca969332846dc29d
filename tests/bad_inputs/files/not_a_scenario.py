from moesim.experiment import Experiment
EXPERIMENT = Experiment(name='x', scenarios=('a',))
