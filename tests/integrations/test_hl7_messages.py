"""HL7 v2 parsing, mapping and ACKs on every sample message, without a database."""

from __future__ import annotations

from pathlib import Path

import hl7
import pytest
from hypothesis import given
from hypothesis import strategies as st

from careops.domain.referrals import normalise_phone
from careops.integrations.inbound import hl7_content, hl7v2

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "hl7"
ACCEPTED = {
    "REF-I12-01.hl7": "REF^I12",
    "ORM-O01-01.hl7": "ORM^O01",
    "ORM-O01-02.hl7": "ORM^O01",
    "ORM-O01-03.hl7": "ORM^O01",
    "LAB-ORM-1.hl7": "ORM^O01",
    "OMG-O19-01.hl7": "OMG^O19",
    "OML-O21-01.hl7": "OML^O21",
    "MDHHS-OML-O21-1.hl7": "OML^O21",
    "SIU-S12-01.hl7": "SIU^S12",
    "SIU-S12_1.hl7": "SIU^S12",
    "SIU-S14-01.hl7": "SIU^S14",
    "SIU-S15-01.hl7": "SIU^S15",
    "ADT-A04-01.hl7": "ADT^A04",
    "ADT04-251.hl7": "ADT^A04",
    "ADT-A08-01.hl7": "ADT^A08",
    "ADT-A31-01.hl7": "ADT^A31",
    "ADT-A01-01.hl7": "ADT^A01",
    "ADT01-23.hl7": "ADT^A01",
    "ADT-A05-01.hl7": "ADT^A05",
    "ADT-A28-01.hl7": "ADT^A28",
    "SIU-S13-01.hl7": "SIU^S13",
    "SIU-S26-01.hl7": "SIU^S26",
    "REF-I14-01.hl7": "REF^I14",
    "ORU-R01-01.hl7": "ORU^R01",
    "DFT-P03-01.hl7": "DFT^P03",
    "MDM-T02-01.hl7": "MDM^T02",
    "BAR-P01-01.hl7": "BAR^P01",
}
# Everything else in the folder (immunisation, pharmacy, problem list) is a type careops does not
# take: AR naming MSH-9.
MALFORMED = {
    "ADT-A01-01--empty.hl7": "hl7:segment_sequence_error:MSH-1",
    "ADT-A31-01--random-bytes.hl7": "hl7:segment_sequence_error:MSH-1",
    "MDM-T02-01--no-message-type.hl7": "hl7:required_field_missing:MSH-9",
    "OMG-O19-01--msh-truncated.hl7": "hl7:required_field_missing:MSH-9",
    "REF-I12-01--no-msh.hl7": "hl7:segment_sequence_error:MSH-1",
    "SIU-S12_1--unsupported-version.hl7": "hl7:unsupported_version_id:MSH-12",
}


def sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("*.hl7"))


def test_the_samples_are_all_classified() -> None:
    assert len(sample_files()) == 30
    assert {p.name for p in (SAMPLES / "malformed").iterdir()} == set(MALFORMED)


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_each_sample_is_accepted_or_refused_by_type(path: Path) -> None:
    if path.name in ACCEPTED:
        message = hl7v2.parse(path.read_bytes())
        assert message.header.kind == ACCEPTED[path.name]
        if hl7v2.DISPOSITIONS[message.header.kind].action == "process":
            assert hl7_content.patient(message, "GB").mrn
    else:
        with pytest.raises(hl7v2.Hl7Rejected) as refused:
            hl7v2.parse(path.read_bytes())
        assert refused.value.ack_code == "AR"
        assert refused.value.location == ("MSH", 9)
        assert refused.value.error in (hl7v2.UNSUPPORTED_MESSAGE_TYPE, hl7v2.UNSUPPORTED_EVENT_CODE)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_samples_are_refused_with_the_reason(name: str) -> None:
    with pytest.raises(hl7v2.Hl7Rejected) as refused:
        hl7v2.parse((SAMPLES / "malformed" / name).read_bytes())
    assert refused.value.ack_code == "AR"
    assert refused.value.reason == MALFORMED[name]


def test_a_referral_maps_patient_referrer_service_and_payer() -> None:
    message = hl7v2.parse((SAMPLES / "REF-I12-01.hl7").read_bytes())
    referral = hl7_content.referral(message, "north", "GB")
    assert referral.patient.mrn == "PATID1234"
    assert (referral.patient.family_name, referral.patient.given_name) == ("EVERYMAN", "ADAM")
    assert referral.patient.birth_date == "19610615"
    assert referral.patient.sex == "male"
    assert referral.referrer.code == "PLN1001"
    assert referral.referrer.name == "ROBERT POWELL"
    assert referral.service_code == "22310-7"
    assert referral.priority == "routine"
    assert referral.payer_code == "Org-12345"
    assert referral.external_id == "226839"
    assert referral.clinical_notes is not None and "K63.3" in referral.clinical_notes


def test_an_order_takes_the_ordering_provider_and_placer_number() -> None:
    message = hl7v2.parse((SAMPLES / "ORM-O01-01.hl7").read_bytes())  # starts with a UTF-8 BOM
    referral = hl7_content.referral(message, None, "GB")
    assert referral.service_code == "24725-4"
    assert referral.referrer.code == "3850"
    assert referral.external_id == "1101"
    assert referral.patient.mrn == "PATID1234"  # the PID-3 repetition typed MR


def test_an_appointment_names_its_ids_start_and_service() -> None:
    appointment = hl7_content.appointment(hl7v2.parse((SAMPLES / "SIU-S12-01.hl7").read_bytes()), "GB")
    assert appointment.event == "booked"
    assert (appointment.placer_id, appointment.filler_id) == ("12345", "36996")
    assert appointment.start == "2021-09-24T09:30:00+02:15"


@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n"])
def test_segment_endings_are_all_read_the_same(ending: str) -> None:
    text = (SAMPLES / "ORM-O01-01.hl7").read_bytes().decode("utf-8-sig")
    variant = ending.join(text.split("\r")).encode()
    assert hl7v2.parse(variant).text == hl7v2.parse(text.encode()).text


def test_the_ack_swaps_sender_and_receiver_and_echoes_the_control_id() -> None:
    header = hl7v2.parse((SAMPLES / "REF-I12-01.hl7").read_bytes()).header
    ack = hl7.parse(hl7v2.acknowledgement(header, "AA", "case created"))
    msh = ack.segment("MSH")
    assert str(msh(3)) == "RHH" and str(msh(5)) == "GHH"
    assert str(msh(4)).startswith("RHHFacility") and str(msh(6)).startswith("GHHSFacility")
    assert str(msh(9)) == "ACK^I12^ACK"
    assert str(ack.segment("MSA")(1)) == "AA"
    assert str(ack.segment("MSA")(2)) == "MSG00112"


def test_an_error_ack_names_the_field_in_err() -> None:
    text = "MSH|^~\\&|A|B|C|D|20260101||ORM^O01|X1|P|2.5.1\rPID|1||^^^^MR||DOE^JANE\r"
    message = hl7v2.parse(text.encode())
    with pytest.raises(hl7v2.Hl7Rejected) as refused:
        hl7_content.patient(message, "GB")
    ack = hl7.parse(hl7v2.acknowledgement(message.header, "AE", refused.value.detail, refused.value))
    assert str(ack.segment("MSA")(1)) == "AE"
    err = ack.segment("ERR")
    assert str(err(2)) == "PID^1^3"
    assert str(err(3)(1)(1)) == "101"


def test_a_message_with_other_encoding_characters_is_read_with_them() -> None:
    text = "MSH#*~!@#A#B#C#D#20260101##ORM*O01#X1#P#2.5.1\rPID#1##M1*****MR##O!F!Brien*Ann\r"
    message = hl7v2.parse(text.encode())
    patient = hl7_content.patient(message, "GB")
    assert patient.family_name == "O#Brien"
    assert patient.given_name == "Ann"
    ack = hl7v2.acknowledgement(message.header, "AA", "a#b")
    assert ack.startswith("MSH#*~!@#")
    assert "MSA#AA#X1#a!F!b" in ack


def test_latin1_messages_are_decoded_from_their_declared_charset() -> None:
    text = "MSH|^~\\&|A|B|C|D|20260101||ADT^A04|X1|P|2.5.1|||||||8859/1\rPID|1||M1^^^^MR||Müller^Jörg\r"
    message = hl7v2.parse(text.encode("latin-1"))
    assert hl7_content.patient(message, "GB").family_name == "Müller"


field_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() == s and s)


@given(family=field_text, given_name=field_text)
def test_escaped_values_read_back_unchanged(family: str, given_name: str) -> None:
    header = hl7v2.Header(version="2.5.1")
    name = f"{hl7v2.escape(family, header)}^{hl7v2.escape(given_name, header)}"
    text = f"MSH|^~\\&|A|B|C|D|20260101||ADT^A04|X1|P|2.5.1\rPID|1||M1^^^^MR||{name}\rZPX|custom|data\r"
    message = hl7v2.parse(text.encode())
    assert hl7_content.value(message.first("PID"), 5, 1) == family
    assert hl7_content.value(message.first("PID"), 5, 2) == given_name
    assert "ZPX|custom|data" in message.text  # Z-segments stay in the kept message


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_anything_but_a_rejection(data: bytes) -> None:
    try:
        message = hl7v2.parse(data)
    except hl7v2.Hl7Rejected as refused:
        assert refused.ack_code == "AR"
        return
    assert message.header.kind in hl7v2.SUPPORTED_TYPES


def _reference_value(segment: hl7.Segment, position: int, repetition: int, component: int) -> str:
    try:
        return str(segment.extract_field(1, position, repetition, component, 1)).strip()
    except IndexError:
        return ""


@pytest.mark.parametrize("path", [p for p in sample_files() if p.name in ACCEPTED], ids=lambda p: p.name)
def test_the_reader_agrees_with_python_hl7_on_every_value(path: Path) -> None:
    """python-hl7 builds the whole tree (0.5 ms a message); careops reads values on demand."""
    message = hl7v2.parse(path.read_bytes())
    reference = hl7.parse(message.text)
    compared = 0
    for ours, theirs in zip(message.all_segments, reference, strict=True):
        assert ours.name == str(theirs[0])
        first_field = 3 if ours.name == "MSH" else 1
        for position in range(first_field, len(ours.fields)):
            for repetition in range(1, ours.repetitions(position) + 1):
                for component in range(1, 6):
                    expected = _reference_value(theirs, position, repetition, component)
                    assert hl7_content.value(ours, position, component, repetition=repetition) == expected, (
                        f"{ours.name}-{position}.{repetition}.{component}"
                    )
                    compared += 1
    assert compared > 100


def test_a_national_phone_number_is_read_in_the_configured_region() -> None:
    """PID-13 in the sender's national format: a possible number where the organisation is (it was
    once checked as a US number, and a UK one such as 020 7946 0000 was dropped)."""
    text = (
        "MSH|^~\\&|A|B|C|D|20260101||ORM^O01|X2|P|2.5.1\r"
        "PID|1||M1^^^^MR||DOE^JANE||19800101|F|||||not a number~020 7946 0000\r"
    )
    message = hl7v2.parse(text.encode())
    assert hl7_content.patient(message, "GB").phone == "020 7946 0000"
    assert hl7_content.patient(message, "US").phone is None
    assert normalise_phone("020 7946 0000", "GB") == "+442079460000"
