"""Every task and method spec hash as it was before YAML ``include:`` collapsed the copied families
(and when each spec was added since): a spec whose YAML was restructured must resolve to exactly
the same content. Update an entry only with a deliberate change of that spec (and its results)."""

from __future__ import annotations

import pytest

from cl_bench.registry import Registry

TASKS = {
    "cifar10-knn": "21347d5673d760b5eb4f8208ef1c0a321cfd8d929277ef510362244f4fe09bcf",
    "cifar10-linear": "0caf03d448c6c986384841c2d70824507e1a2f84b6aa114df06443fd437c9c0a",
    "cifar100-knn": "3f2fed1adf18ce1260004c572d0097d0de6ec5b85715fb29472c7403e164ad6e",
    "cifar100-linear": "a2b9e8ea14bf858356914c530fc83d681d02afbbe1eaadcfd102d4aa9a1b0bdb",
    "cityscapes-seg-fcn": "15d57ca6d46fadc3c1f5fe6e02500a1883f57022fd7afc5b40cc76fdecd3db68",
    "coco-det-c4-1x": "e8be4ef08bb7d29117c14608767894c01331821a3843412d730616b6d116d477",
    "coco-det-fpn-1x": "0fa6a9351c3c35e647a079238f5c80ce2d10d6516293db3cb6c1f8b930be96bd",
    "coco-retrieval-5k": "dd684c8f2e163423c083447311524a7f50833bbbc313cbacfddf7bc8d12d2780",
    "digits-fewshot": "e006f625ce9597371b36ad2051f4fd934165b3bf909c0e85048eac0f99d688c0",
    "digits-hard-knn": "ae69e889b654c12378455295c04884e2581dec261827406d2edef9b6f3cf1315",
    "digits-hard-linear": "40fafc34b217167bc894ca37403cc00a385b115270c498809bf24457b438d22a",
    "digits-knn": "87befa038c01db1d11e9754f9fd54f686704baa1da120733a5208519d1f9a76c",
    "digits-linear": "ae3d7de1813bbd9c594669bf794366a46d13f410c667d1cbf7bcd9b1b6a93c26",
    "digits-salient-separation": "32d99b6816c5cc8e3122876990d5f94e166e02220628a91c0d7f99a7c9743659",
    "flickr30k-retrieval-1k": "d26b0efdd86cd1c13868734a44bc8ea0f7b7c5efff3cda9f6cfc2187d89b3b69",
    "icl-fewshot-agnews": "0510d1588a51f32ea5dda230ca744bd3eddd305d3b697306bf3625270d4977a7",
    "icl-fewshot-cpt-synthetic": "7ec57253fcdb3da9ec074d27c6158a903ebd32523791ee7aef9220d6b840836c",
    "icl-fewshot-rte": "92659e58fedf7d798ae0d907461859e61097a3d84eef94a18f014ba2b323c2e5",
    "icl-fewshot-sst2": "79bec6d9b1e72cb0408d709b0743aa377aab435bfa0aab05560daae2e90d4102",
    "icl-fewshot-synthetic": "42399cb8efa69885d79624f580143f0258998c59e716f89c5ab2fe92caa1209e",
    "icl-fewshot-trec": "e829f522579b5df02f6120e6a79491c767b3aeb5e4824fb88d5a275c8a42c8b4",
    "icl-linreg": "301f32f1e86ef9a9e0d538b455707351dca4b903e4808558319c495eb2f3e224",
    "icl-linreg-paper": "c38e3bd4d138a2e0abfc5a3b0010656d4ee3c5838088753f763766c0ae7f4fb7",
    "icll-dfa": "a39a81f3531b828602a54ae593950f8737b7ba69eaee063714ddbbc1ba42837d",
    "icll-dfa-paper": "aa223c4e29c25391f8dd9809dd87cda0a526c4dec527b9d8ae2dcb7cdb851ae6",
    "imagefolder-linear": "d0f5c31fc1ec52f030b28d70753e6bb283e53eee9181d3e0349307b7a7eef161",
    "imagenet-knn": "d088a342209a63179aa554251d0e62b7d74b05fc2b026e899cc569332870041e",
    "imagenet-linear": "c24ab9d606639634dbb9fc07bed28c92a4345ab89901333deb104795bc3276c2",
    "imagenet-zeroshot": "cd4e0f291ce8a591a6ab4ed61e0f89146b101d9c2566ec820f26b09506833759",
    "mmeb": "5a62802c01f1b88d8300caf5c7d60ba046f46c1eee9d9c269f2798cc432639dd",
    "mmvp-vlm": "23c2761c2923c4d76587a1954d11e0e63edcd18ab6f12dcf884b35287ef460ce",
    "mnist-knn": "2b9698a673fcfb1888a02fecaa644242278a1f3bd876bdaa19b9f96d44ef6dad",
    "mnist-linear": "0db9a7326f2fae6535d398cd3025e879b07ebaf0107b265d901f047bd0f769ab",
    "paraphrase-mining": "efd4c6fe458e0b34692d25655eb80723e2513c951cce196163b6e10595be4c7c",
    "scenes-coco-det": "99bf95ce34ef048ddb1cf9882cc72b9d7e3a72632806b5a38088d74fd7fd53e4",
    "scenes-coco-det-frozen": "3177266b482b282596616c12a4071db2b9a6ddbe9b51d911b7042443012c74e3",
    "scenes-mmeb-mini": "42efc19b8182033e2df61e4150780c0b1bb35ceb38fcdec497762b3cb87993ec",
    "scenes-mmvp": "0bea59234efebf6c703874e425dc2f0b02e2ded7590904634385bf5738463df7",
    "scenes-retrieval": "871e3bcdc664520f18f10b090338c911f33d426f15bb7f6637269d9b34ffa6e9",
    "scenes-seg": "d0ac2db0486e76691da82c3b4f2443a99a1734a0c15d0c732dbd7e340835daee",
    "scenes-seg-frozen": "7f17c90c6daedd96abfbda7baa7c9377208ba467a2cd36d7c4533efb6d42bb1e",
    "scenes-voc-det": "2b7cd11d7c4020a4810f139ded60315fa63d4b4ff14a0de5111685f32d2acd27",
    "scenes-voc-det-frozen": "0d1d260060d9c8be2d8eba200635dea14d4f7d42da8ad30f354f86cc49d5bc0c",
    "scenes-zeroshot": "07d635b27aa04be0ec67bc7e27850b8a047d71b75952f749147d3daf3d8eceda",
    "stl10-linear": "5721db5d3725d4125e9c0c5a65ca6d8967bc4dab031e24559a9cb7a4c9e24ee2",
    "sts-synthetic": "d10a233fd59fb4e30788e94d45786d7302d794685d43c250987ef22840bf3c51",
    "tatoeba-bitext": "83d115e3fb8382a22e9b97a0a5eaa6190a6f9957ff9f9cf88235a464a1d76251",
    "tatoeba-mini": "8aa936938aad96be7eabdf684ddf52f901b8a187d9690aaa98f92f45c1adb494",
    "truthfulqa-mc1": "b2bb9719ac9511d4f4e2aa681d54b0f7cf8f685d27c8e262bb129666b25216f8",
    "truthfulqa-mc2": "ee4a8d625fd5e44437121c1c68c6644d3f958988443d7feaadfb5e470c8d54be",
    "voc07-det-c4": "1195fbffca8f2885543726b5c68bf6cd9d45f579204ac230e4125edae9034d0c",
}

METHODS = {
    "byol": "e4803b425b6a7f386a5cf29d82f889d06ccb93e51a8a1f418c2826af1af1d1d9",
    "cacr": "76a865d307086e7ef745f84ce527148cf6bcc09571b4c087dbe01d202ab59c25",
    "ccp": "ec48becab7a724552a4b5af689fda7b22aae5813d47dbf313d9d0b4de6a4be72",
    "clip": "fec6553f67c3fa533cc2a1fc5ed26e58c567d5d58b4be6a99fd8bda74b4ec466",
    "contrastive-decoding": "3c3273bb9b5034b2734c40081354a5362ca28fd0bcec6978d0309445e266173c",
    "dcl": "e8e60e3dc69f8ee7431bcb8f0367b61fc8878686231a55be320f5292806e9a4d",
    "dcl-clip": "20dd778b6448514ab3fa51872339fddaca30c9dc90f7f27810100ab6d77674f9",
    "dclw": "f368e490f580fcd402d9d14a59fafcc2bd4bae5e70bf450430d3324ca512073c",
    "dola": "50a1231a017c61b932f303c94c6007cfdc3892740908f319aac3e579eb6fb2e8",
    "dreamlip": "7ceeb6bb4ea1fce88970ec42e0731783a0e502089d1853f0458f59f00149f0cb",
    "hf-clip": "0bc8ae689da29a248e1c692f89282d7d1de75e479ef68a05135ca76b3613c9af",
    "icl-linear-rnn": "ef64a13892e8aecf2f4dc2b59ab7445b646df51ace1ddd5e1104f620cd0ccb8e",
    "icl-lstm": "7eed5a23d0e304aad97d9aff492bff5a9be82b7fb87ef025699b2b330e6e0ff1",
    "icl-transformer": "d3b503a69cc4bf33b47d5f2387f1b1f6dc1400d1e363d9982468b42c4f90d3da",
    "lol": "88b19d723138353abf07cb47adc5588146b8382a8821706c7ff376fa35d69240",
    "mcl": "749a7c36186649d9c8b57653a0ce118d2dd9cd7bb2a6098aa32a21421d25eb07",
    "mcl-clip": "bb08de2dadb61be3a5d3032bbe2f18887101a4240941ce1974631fa4fc8d10b4",
    "minilm": "0109eb498e5e51b9b16e9f89fad955f060cfb990ba6deabb9b2e23af6aa7f071",
    "mv-dhel": "ad3766306670b09cffc906b27624c55e81e99a4b28e99205e265de89facf7ab7",
    "mv-dhel-v2": "2b3c3333fa752858667e35efd9cefe1271a81ee48a3ab2f08be3e8444abace65",
    "mv-dhel-v5": "540fab32c9a723f18347c56bcd477e96296ef20d7c6eaada270ec4dc23c17b2a",
    "mv-infonce": "c1c9d073705a30d7e6f3befa4c20f8b28a5381b21e66400b710e13d095ae5071",
    "mv-infonce-v2": "f6f2243ede21d3d267e2751dd5067ce3aeb97771223f3c770b6c9c3dbc3fa236",
    "mv-infonce-v5": "b139550bb4d4805b34781c2a18045326bec377a0018592b236ea7160486cbab0",
    "openclip-vit-b-32": "d756cf5b7c49acaaba23895f226d02401993047ab9c747fff3565cbb407b30b9",
    "pixcontrast": "b1b81806f47cc84494ff736dca2039d0c2692299e484cb04df629140a21e4dfc",
    "pixpro": "d03412eb87bb14a8b1fd1f1629365a68d2cc2f8da3fe385822c21e338c896fb9",
    "pixpro-fpn": "3684f48606e89e66e0c04e11dc67c71ac611f8d761c450966326c4f3f558bb25",
    "pixpro-r50": "e188aeffde369b4e33c1436b1058bf8b209afd5bb90795833086bf0c42ddf096",
    "protoclip": "3193b9ef7728c6f580cb4d481325a6743db9aa56c3d78338f09986db13743d1c",
    "random": "21a60440fab2917a6c346e663ae5a970028db9f00e6a40f7bce2b52be1c23a75",
    "raw-pixels": "1b8372b3c9a866796a66831b7c97b82e0a8147e00e79303bdeda574cb98f18c7",
    "scatsimclr": "d10c722b1d1fac58d7543cdd2f7c4ec6b2ca0d68ff1982d30e8337df0763e7f7",
    "sepclr": "97c4a092c64558ff3a6124a651afa8e1d9bebaab59b7ee0a3e5a16ca5053bf8b",
    "simclr": "556cf0c7c39d5d187ff4de2153ea312f5247e5f95262dac7723df17f209f573e",
    "simcse": "2e86b2e74f9aa73510f526e519c7acb469e11d044f0ef614dcdb8cdc2f0b2d0c",
    "supervised": "bd91aeb6c967c47398e5c1853f93a3ec3ebbda5c7c43a37c66d4638275a5e357",
    "tcl": "0fcf51bc9bcdd55018a9a97976d0482691eb06b365643066a37db1cf2a6b186c",
    "tiny-lm": "7560799cfe247544b25a82d4101783528ba2d94d4a2e1f4a4c1f74318f61bc20",
    "tiny-lm-icl": "ef50a1a379010e4dc47e327ba32126c44db8a6bab521a8a4f19967c8a017e482",
}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


def test_every_spec_is_pinned(registry: Registry) -> None:
    assert set(registry.task_ids()) == set(TASKS)
    assert set(registry.method_ids()) == set(METHODS)


@pytest.mark.parametrize("task_id", sorted(TASKS))
def test_task_spec_hash_is_unchanged(registry: Registry, task_id: str) -> None:
    assert registry.task(task_id).spec_hash() == TASKS[task_id]


@pytest.mark.parametrize("method_id", sorted(METHODS))
def test_method_spec_hash_is_unchanged(registry: Registry, method_id: str) -> None:
    assert registry.method(method_id).spec_hash() == METHODS[method_id]
