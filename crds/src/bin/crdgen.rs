//! Prints every FerroLB CRD as one multi-document YAML stream (committed as deploy/crds/).

fn main() {
    print!("{}", ferrolb_crds::all_crds_yaml());
}
