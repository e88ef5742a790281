import torch

from kangae.probes.confusion import confusion, confusion_matrix


def test_confusion_matrix_of_known_predictions():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    m = confusion_matrix(pred, labels, 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 0]]


def test_most_confused_pairs_with_their_most_confident_mistakes():
    labels = torch.tensor([4, 4, 4, 9, 9, 7, 7])
    logits = torch.full((7, 10), -5.0)
    logits[0, 9], logits[1, 9], logits[2, 4] = 2.0, 4.0, 3.0  # two 4s read as 9
    logits[3, 4], logits[4, 9] = 1.0, 3.0  # one 9 read as 4
    logits[5, 1], logits[6, 7] = 3.0, 3.0  # one 7 read as 1
    res = confusion(logits, labels)
    top = res.pairs[0]
    assert (top["true"], top["pred"], top["count"]) == (4, 9, 2)
    assert top["indices"] == [1, 0]  # the more confident mistake first
    assert top["probabilities"][0] > top["probabilities"][1]
    assert {(p["true"], p["pred"]) for p in res.pairs[1:]} == {(9, 4), (7, 1)}
    assert res.per_class_accuracy[4] == 1 / 3 and res.per_class_accuracy[7] == 0.5
