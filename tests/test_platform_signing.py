"""Request signatures match the gateways' worked examples (../shared/platform-apis.md)."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from app.platforms.signing import clean_params, jd_sign, pdd_sign, sign_base, top_sign

TOP_EXAMPLE = {
    "app_key": "12345678", "fields": "num_iid,title,nick,price,num", "format": "json",
    "method": "taobao.item.seller.get", "num_iid": "11223344", "session": "test", "sign_method": "md5",
    "timestamp": "2016-01-01 12:00:00", "v": "2.0",
}
TOP_JOINED = ("app_key12345678fieldsnum_iid,title,nick,price,numformatjsonmethodtaobao.item.seller.get"
              "num_iid11223344sessiontestsign_methodmd5timestamp2016-01-01 12:00:00v2.0")

PDD_EXAMPLE = {
    "access_token": "asd78172s8ds9a921j9qqwda12312w1w21211", "client_id": "1", "data_type": "XML",
    "order_status": "1", "page": "1", "page_size": "10", "timestamp": "1480411125",
    "type": "pdd.order.number.list.get",
}
PDD_SIGNED_STRING = ("testSecretaccess_tokenasd78172s8ds9a921j9qqwda12312w1w21211client_id1data_typeXML"
                     "order_status1page1page_size10timestamp1480411125typepdd.order.number.list.gettestSecret")

JD_EXAMPLE = {
    "360buy_param_json": '{"end_date":null,"optional_fields":null,"order_state":"WAIT_SELLER_STOCK_OUT",'
                         '"page":"1","page_size":"200","start_date":null}',
    "access_token": "yourtoken", "app_key": "yourappkey", "method": "jingdong.pop.order.search",
    "timestamp": "2021-05-07 09:20:39.683+0800", "v": "2.0",
}


def test_taobao_md5_worked_example():
    assert sign_base(TOP_EXAMPLE) == TOP_JOINED
    assert top_sign(TOP_EXAMPLE, "helloworld") == "66987CB115214E59E6EC978214934FB8"
    assert top_sign(TOP_EXAMPLE, "helloworld", "md5") == "66987CB115214E59E6EC978214934FB8"


def test_taobao_hmac_md5_worked_example():
    params = dict(TOP_EXAMPLE, sign_method="hmac")
    assert top_sign(params, "helloworld", "hmac") == "D56D7858309C31B6251083A874D48273"


def test_taobao_hmac_sha256_is_hmac_over_the_joined_string_uppercase():
    params = dict(TOP_EXAMPLE, sign_method="hmac-sha256")
    expected = hmac.new(b"helloworld", sign_base(params).encode(), hashlib.sha256).hexdigest().upper()
    assert top_sign(params, "helloworld", "hmac-sha256") == expected
    assert len(expected) == 64


def test_taobao_unknown_sign_method_is_refused():
    with pytest.raises(ValueError):
        top_sign(TOP_EXAMPLE, "helloworld", "sha1")


def test_pdd_worked_example():
    assert f"testSecret{sign_base(PDD_EXAMPLE)}testSecret" == PDD_SIGNED_STRING
    assert pdd_sign(PDD_EXAMPLE, "testSecret") == "E4DE3ED21002510DED352819E7AE6775"


def test_jd_worked_example():
    assert jd_sign(JD_EXAMPLE, "yourappSecret") == "D70825340F4084360B9362B60DFD7930"


@pytest.mark.parametrize("sign", [top_sign, pdd_sign, jd_sign])
def test_sign_and_empty_values_are_not_signed(sign):
    base = sign(TOP_EXAMPLE, "helloworld")
    noisy = dict(TOP_EXAMPLE, sign="ABCDEF", partner_id="", target_app_key=None)
    assert sign(noisy, "helloworld") == base


def test_parameter_order_does_not_matter():
    reversed_params = dict(reversed(list(TOP_EXAMPLE.items())))
    assert top_sign(reversed_params, "helloworld") == "66987CB115214E59E6EC978214934FB8"


def test_values_are_signed_as_they_are_posted():
    cleaned = clean_params({"use_has_next": False, "page_no": 3, "x": None, "y": "", "z": "中文"})
    assert cleaned == {"use_has_next": "false", "page_no": "3", "z": "中文"}
    assert sign_base({"use_has_next": False, "page_no": 3}) == "page_no3use_has_nextfalse"
