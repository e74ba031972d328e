export class NewActionRequest extends $dara.Model {
  pictureUrl?: string;
  productCode?: string;
  static names(): { [key: string]: string } {
    return {
      pictureUrl: 'PictureUrl',
      productCode: 'ProductCode',
    };
  }

  static types(): { [key: string]: any } {
    return {
      pictureUrl: 'string',
      productCode: 'string',
    };
  }
}

export class NewActionResponseBodyResult extends $dara.Model {
  transactionId?: string;
  static names(): { [key: string]: string } {
    return {
      transactionId: 'TransactionId',
    };
  }

  static types(): { [key: string]: any } {
    return {
      transactionId: 'string',
    };
  }
}
