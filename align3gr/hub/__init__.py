"""Publishing a run's stage (`align3gr push`) and loading a published model as a recommender (`load_recommender`)."""
