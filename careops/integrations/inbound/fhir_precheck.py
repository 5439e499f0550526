"""A fast check that a FHIR resource is valid, compiled from the ``fhir.resources`` models.

``fhir.resources`` validates each complex element (every Identifier, Reference, Coding, …)
through Python hooks: a wrap function that resolves the element's model, a before-validator that
looks at every field of the model for nulls, and an after-validator for required primitives and
choice (``value[x]``) elements. For a referral Bundle of 10 resources that is some 60 model
instances and most of the FHIR channel's CPU.

``accepts(resource)`` asks the same questions of the same models in one pass of pydantic-core: the
models' own field schemas (primitive types with their patterns and validators, cardinality,
unknown elements refused), with each complex element's Python hook replaced by a reference to
that element's compiled schema, and the required and choice rules of each model read from the
model. It is sound for acceptance only: ``True`` means ``fhir.resources`` accepts the resource
too (a differential test holds it to that); ``False`` means "ask ``fhir.resources``", which
``fhir_r4.validate`` then does, for the real verdict and its error messages. Whatever the check
cannot express is refused, so that the library decides: a polymorphic element (``contained``, a
Bundle entry's resource), a model with validators of its own (a primitive's ``_element``
extension), a field given by its Python name instead of its JSON name, a primitive left out for
an extension. ``accepts_bundle`` checks a Bundle with its entries' resources in the same pass, each
by the model its ``resourceType`` names among those it is given.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase, FhirElementOrResourceBase
from pydantic_core import CoreSchema, PydanticCustomError, SchemaValidator, core_schema

from careops.observability.logs import get_logger

# The hook fhir_core wraps around every complex element, and the model validators every model has.
_ELEMENT_HOOK = "FhirBase.__get_pydantic_core_schema__.<locals>._validate"
_COMMON_VALIDATORS = frozenset({"reject_null_complex_elements", "validate_after_model_construction"})
_SKIPPED_KEYS = frozenset({"metadata", "serialization", "ref"})
log = get_logger("careops.fhir")


def accepts(resource: dict[str, Any]) -> bool:
    """True when ``fhir.resources`` is sure to accept ``resource`` (a dict with ``resourceType``);
    False when it may not, or when this check cannot tell."""
    try:
        model = get_fhir_model_class(str(resource.get("resourceType")))
    except (KeyError, ValueError):
        return False
    return _passes(_validator(model), resource)


def accepts_bundle(bundle: dict[str, Any], resource_types: frozenset[str]) -> bool:
    """``accepts`` for a Bundle and each entry's resource at once (a third less work than asking
    about each): True when ``fhir.resources`` is sure to accept the Bundle without its entries'
    resources and each of them by itself; False when any may not be valid, or is of a type not in
    ``resource_types`` (``accepts`` can still be asked about each)."""
    return _passes(_bundle_validator(resource_types), bundle)


def _passes(validator: SchemaValidator | None, document: dict[str, Any]) -> bool:
    if validator is None:
        return False
    try:
        validator.validate_python(document)
    except Exception:  # whatever this check cannot tell, fhir.resources decides
        return False
    return True


@cache  # by model class: as many entries at most as fhir.resources has models
def _validator(model: type[FHIRAbstractModel]) -> SchemaValidator | None:
    return _built(lambda: _COMPILER.compile(model), model.__name__)


@cache  # by set of types: one in careops (the types a referral Bundle may hold)
def _bundle_validator(resource_types: frozenset[str]) -> SchemaValidator | None:
    return _built(lambda: _COMPILER.compile_bundle(sorted(resource_types)), "Bundle")


def _built(compile_root: Callable[[], str | None], name: str) -> SchemaValidator | None:
    """The validator of the definition ``compile_root`` compiles (None: it cannot be compiled)."""
    # One compilation at a time: a model being compiled has a placeholder that accepts anything.
    with _COMPILING:
        try:
            ref = compile_root()
            if ref is None:
                return None
            root = core_schema.definition_reference_schema(ref)
            return SchemaValidator(core_schema.definitions_schema(root, list(_COMPILER.definitions.values())))
        except Exception:  # a model this cannot read: the models decide, and nothing half-done stays
            log.warning("fhir.precheck_not_compiled", model=name, exc_info=True)
            _COMPILER.reset()
            return None


def warm(resource_types: Iterable[str], bundle_of: frozenset[str] | None = None) -> None:
    """Compile the checks of these resource types now (a few tenths of a second each, once), and
    ``accepts_bundle``'s for Bundles of ``bundle_of``."""
    for resource_type in resource_types:
        _validator(get_fhir_model_class(resource_type))
    if bundle_of is not None:
        _bundle_validator(bundle_of)


def _ref(model: type[FHIRAbstractModel]) -> str:
    return f"careops-fhir:{model.__module__}.{model.__qualname__}"


class _Compiler:
    """Compiles a model and every element model it reaches into typed-dict schemas by reference."""

    def __init__(self) -> None:
        self.definitions: dict[str, CoreSchema] = {}
        self.refused: set[str] = set()

    def reset(self) -> None:
        """Forget every compiled model (validators already built keep theirs)."""
        self.definitions.clear()
        self.refused.clear()

    def compile(self, model: type[FHIRAbstractModel]) -> str | None:
        """The reference of the model's compiled schema, or None when it cannot be compiled."""
        ref = _ref(model)
        if ref in self.definitions:
            return ref
        if ref in self.refused:
            return None
        fields = _model_fields(model)
        if fields is None:
            self.refused.add(ref)
            return None
        self.definitions[ref] = core_schema.any_schema()  # a placeholder while its fields compile
        instance = model.model_construct()
        required = {name for name, _ in instance.get_required_fields()}
        compiled = {name: self._field(field, name in required) for name, field in fields.items()}
        if model.has_resource_base():
            resource_type = core_schema.literal_schema([model.get_resource_type()])
            compiled["resourceType"] = core_schema.typed_dict_field(resource_type, required=False)
        schema: CoreSchema = core_schema.typed_dict_schema(compiled, extra_behavior="forbid")
        unchecked = [name for name in sorted(required) if not compiled[name]["required"]]
        rules = _rules(model, instance, unchecked)
        if rules is not None:
            schema = core_schema.no_info_after_validator_function(rules, schema)
        self.definitions[ref] = {**schema, "ref": ref}
        return ref

    def compile_bundle(self, resource_types: list[str]) -> str | None:
        """The reference of a Bundle whose entries' resources are each checked by the model of
        their ``resourceType``, one of ``resource_types`` (any other type fails the check); None
        when the Bundle models do not have the shapes this expects."""
        bundle, entry = get_fhir_model_class("Bundle"), get_fhir_model_class("BundleEntry")
        choices: dict[str, CoreSchema] = {}
        for name in resource_types:
            ref = self.compile(get_fhir_model_class(name))
            if ref is not None:
                choices[name] = core_schema.definition_reference_schema(ref)
        if self.compile(bundle) is None or not choices:
            return None
        entry_ref, bundle_ref = _ref(entry), _ref(bundle)
        entry_schema = self.definitions[entry_ref]
        resource = entry_schema.get("fields", {}).get("resource", {}).get("schema", {})
        if entry_schema["type"] != "typed-dict" or not _is_refusal(resource.get("schema")):
            return None
        suffix = f"[{','.join(choices)}]"
        union = core_schema.tagged_union_schema(choices, discriminator="resourceType")
        fields = dict(entry_schema["fields"])
        fields["resource"] = {**fields["resource"], "schema": {**resource, "schema": union}}
        self.definitions[entry_ref + suffix] = {**entry_schema, "fields": fields, "ref": entry_ref + suffix}
        retargeted = _retarget(self.definitions[bundle_ref], entry_ref, entry_ref + suffix)
        self.definitions[bundle_ref + suffix] = {**retargeted, "ref": bundle_ref + suffix}
        return bundle_ref + suffix

    def _field(self, field: dict[str, Any], required: bool) -> core_schema.TypedDictField:
        schema = field["schema"]
        optional = schema.get("type") == "default"
        # An optional field's default is left out: the checked dict holds only the elements that
        # are there (with the models' defaults, ~30 Nones would be made for every element).
        inner = schema["schema"] if optional else schema
        if required and inner.get("type") == "nullable":
            # A primitive the model requires (its after-validator checks it): there and not null,
            # said in the schema instead of by a Python rule.
            inner, optional = inner["schema"], False
        return core_schema.typed_dict_field(
            self._transform(inner), required=not optional, validation_alias=field["validation_alias"]
        )

    def _transform(self, node: Any) -> Any:
        """A field's schema with each complex element's hook replaced by its compiled model."""
        if isinstance(node, list):
            return [self._transform(item) for item in node]
        if not isinstance(node, dict):
            return node
        hook = node["function"].get("function") if isinstance(node.get("function"), dict) else None
        if node.get("type") != "function-wrap" or getattr(hook, "__qualname__", "") != _ELEMENT_HOOK:
            return {key: (v if key in _SKIPPED_KEYS else self._transform(v)) for key, v in node.items()}
        element = _element_model(hook)
        if element is None:  # any resource (contained, a Bundle entry's): the models decide
            return core_schema.no_info_plain_validator_function(_refuse)
        ref = self.compile(element)
        # A model with validators of its own keeps the library's hook: it validates that element.
        return node if ref is None else core_schema.definition_reference_schema(ref)


def _model_fields(model: type[FHIRAbstractModel]) -> dict[str, Any] | None:
    """The model's ``model-fields`` schema, if it has exactly the validators every model has."""
    if set(model.__pydantic_decorators__.model_validators) != _COMMON_VALIDATORS:
        return None
    if model.__pydantic_decorators__.field_validators:
        return None
    node: Any = model.__pydantic_core_schema__
    for expected in ("function-after", "model", "function-before"):
        if not isinstance(node, dict) or node.get("type") != expected:
            return None
        node = node["schema"]
    if node.get("type") != "model-fields" or node.get("computed_fields"):
        return None
    return dict(node["fields"])


def _element_model(hook: Any) -> type[FHIRAbstractModel] | None:
    """The model a complex element's hook validates with; None for a polymorphic element."""
    cells = dict(zip(hook.__code__.co_freevars, hook.__closure__ or (), strict=True))
    source = cells["source_type"].cell_contents
    if not isinstance(source, type) or not issubclass(source, FhirBase):
        return None
    if issubclass(source, FhirElementOrResourceBase):
        return None
    model = source.get_model_klass()
    return model if isinstance(model, type) and issubclass(model, FHIRAbstractModel) else None


def _refuse(value: Any) -> Any:
    raise PydanticCustomError("careops_precheck", "left to fhir.resources")


def _is_refusal(node: Any) -> bool:
    """Whether ``node`` is the schema ``_transform`` put in place of a polymorphic element."""
    if not isinstance(node, dict) or node.get("type") != "function-plain":
        return False
    return node["function"]["function"] is _refuse


def _retarget(node: Any, old: str, new: str) -> Any:
    """``node`` (a schema) with its references to the definition ``old`` made to ``new``."""
    if isinstance(node, list):
        return [_retarget(item, old, new) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("type") == "definition-ref" and node.get("schema_ref") == old:
        return {**node, "schema_ref": new}
    return {key: (v if key in _SKIPPED_KEYS else _retarget(v, old, new)) for key, v in node.items()}


def _rules(
    model: type[FHIRAbstractModel], instance: FHIRAbstractModel, required: list[str]
) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """The model's choice elements and the required primitives its schema could not say are
    required, checked on the validated dict (by field name); stricter than the model, which also
    takes an extension in place of a required value."""
    choices = []
    for fields in instance.get_one_of_many_fields().values():
        extra = model.model_fields[fields[0]].json_schema_extra
        choices.append((fields, isinstance(extra, dict) and extra.get("one_of_many_required") is True))
    if not required and not choices:
        return None

    def check(values: dict[str, Any]) -> dict[str, Any]:
        for name in required:
            if values.get(name) is None:
                raise PydanticCustomError("careops_precheck", "a required element is missing")
        for fields, must in choices:
            present = sum(1 for name in fields if values.get(name) is not None)
            if present > 1 or (must and present == 0):
                raise PydanticCustomError("careops_precheck", "a choice element is wrong")
        return values

    return check


_COMPILER = _Compiler()  # one set of compiled element models for every resource type
_COMPILING = threading.Lock()
